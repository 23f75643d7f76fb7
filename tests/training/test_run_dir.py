"""A failed `eim train` leaves the run folder as it was (eim.training.run_dir; issue 18, item 3)."""

import json
import shutil

import pytest
from format_files import truncate

from eim.cli import main


@pytest.fixture(scope="module")
def world(tiny_dir, tmp_path_factory):
    """Shapes data, a copy with one training image truncated (header intact), and a finished run."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["data", "shapes", "--out", str(root / "D"), "--train", "8", "--val", "2", "--test", "2",
                 "--size", "32"]) == 0
    shutil.copytree(root / "D" / "coco", root / "BAD")
    rec = next(im for im in json.loads((root / "BAD" / "dataset_coco.json").read_text())["images"]
               if im["split"] == "train")
    bad = truncate(root / "BAD" / rec["filepath"] / rec["filename"])
    w = {"root": root, "data": root / "D" / "coco", "bad": root / "BAD", "bad_image": bad, "bad_id": rec["cocoid"],
         "tiny": tiny_dir}
    assert train(w, "finished") == 0
    return w


def train(w, out, *extra, data=None, recipe="clipcap"):
    return main(["train", recipe, "--data", str(data or w["data"]), "--out", str(w["root"] / out), "--quiet",
                 "--vision.name_or_path", str(w["tiny"] / "clip"), "--lm.name_or_path", str(w["tiny"] / "gpt2"),
                 "--projector.prefix_length", "2", "--train.batch_size", "4", "--train.warmup_steps", "0",
                 "--stages.0.epochs", "none", "--stages.0.steps", "3", *extra])


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_of_finished(w, name):
    shutil.copytree(w["root"] / "finished", w["root"] / name)
    return w["root"] / name, snapshot(w["root"] / name)


def test_bad_data_into_a_finished_run_changes_nothing(world, capsys):
    """The issue's case: `eim train clipcap --data BAD --out FINISHED_RUN` used to delete the
    finished stage's metrics.jsonl before failing on the truncated image."""
    run, before = copy_of_finished(world, "f1")
    assert "stage-0-base/metrics.jsonl" in before and "stage-0-base/model.safetensors" in before
    assert train(world, "f1", data=world["bad"]) == 2  # the index file is the same: this run; no --resume
    err = capsys.readouterr().err
    assert "already holds this run (stage-0-base): nothing was changed; pass --resume" in err
    assert snapshot(run) == before
    assert train(world, "f1", "--overwrite", data=world["bad"]) == 2  # told to retrain: fails in the stage
    err = capsys.readouterr().err
    assert f"{world['bad_image']}: cannot decode image (OSError: " in err and "--skip-bad skips them" in err
    assert snapshot(run) == before  # the old run is whole: the failed stage ran in a .partial folder
    assert sorted(p.name for p in run.iterdir()) == ["origin.json", "recipe.json", "run.json", "stage-0-base"]


def test_a_different_run_is_refused_unless_overwrite(world, capsys):
    run, before = copy_of_finished(world, "f2")
    assert train(world, "f2", "--train.lr", "1e-4") == 2
    err = capsys.readouterr().err
    assert "holds a different run (stage-0-base; it differs in train.lr: 2e-05 -> 0.0001)" in err
    assert train(world, "f2", "--resume", "--train.lr", "1e-4") == 2  # resume continues only this run
    assert "holds a different run" in capsys.readouterr().err
    other = world["root"] / "other"  # other data: one caption less
    shutil.copytree(world["data"], other)
    karpathy = json.loads((other / "dataset_coco.json").read_text())
    next(im for im in karpathy["images"] if im["split"] == "train")["sentences"].pop()
    (other / "dataset_coco.json").write_text(json.dumps(karpathy))
    assert train(world, "f2", "--resume", data=other) == 2
    assert "holds a different run (stage-0-base; it differs in data: records, file contents differ)" in capsys.readouterr().err
    assert snapshot(run) == before
    # --log-every, --save-every and generation settings do not make another run
    assert train(world, "f2", "--resume", "--train.log_every", "5", "--generation.num_beams", "2") == 0
    assert snapshot(run)["stage-0-base/model.safetensors"] == before["stage-0-base/model.safetensors"]
    assert json.loads((run / "recipe.json").read_text())["generation"]["num_beams"] == 2
    assert train(world, "f2", "--overwrite", "--train.lr", "1e-4") == 0
    after = snapshot(run)
    assert after["stage-0-base/model.safetensors"] != before["stage-0-base/model.safetensors"]
    assert json.loads(after["recipe.json"])["train"]["lr"] == 1e-4
    assert json.loads(after["run.json"])["recipe"]["train"]["lr"] == 1e-4


def test_overwrite_with_another_recipe_removes_the_old_stages_when_the_first_new_one_finishes(world):
    run, before = copy_of_finished(world, "f3")
    args = ["--overwrite", "--projector.type", "token_ffn", "--vision.features", "full",
            "--stages.0.epochs", "none", "--stages.0.steps", "2", "--stages.1.epochs", "none",
            "--stages.1.steps", "2", "--stages.2.epochs", "none", "--stages.2.steps", "2"]
    assert train(world, "f3", *args, recipe="clipcap_eim") == 0
    names = sorted(p.name for p in run.iterdir())
    assert names == ["banks", "origin.json", "recipe.json", "run.json", "stage-0-st", "stage-1-lm", "stage-2-base_ie"]


def test_skip_bad_trains_without_the_truncated_image(world, caplog):
    assert train(world, "skipping", "--skip-bad", data=world["bad"]) == 0
    fp = json.loads((world["root"] / "skipping" / "run.json").read_text())["data"]
    assert fp["records"] == 40 - 5  # the image's 5 captions are left out
    assert f"skipped 1 bad record: {world['bad_id']} (cannot decode image" in caplog.text


def test_resume_reuses_a_finished_run(world, capsys):
    run, before = copy_of_finished(world, "f4")
    assert train(world, "f4", "--resume") == 0
    assert snapshot(run) == before


def test_other_weights_at_the_base_models_path_are_another_run(world, capsys):
    """Encoders pretrained again in place (new data, a newer generator) must not resume old runs."""
    from safetensors.torch import load_file, save_file

    lm = world["root"] / "lm-again"
    shutil.copytree(world["tiny"] / "gpt2", lm)
    assert train(world, "f5", "--lm.name_or_path", str(lm)) == 0
    run = world["root"] / "f5"
    assert json.loads((run / "run.json").read_text())["models"]["lm"] != "id:" + str(lm)
    assert train(world, "f5", "--resume", "--lm.name_or_path", str(lm)) == 0  # same weights: reused
    capsys.readouterr()
    weights = lm / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    before = snapshot(run)
    assert train(world, "f5", "--resume", "--lm.name_or_path", str(lm)) == 2
    assert "holds a different run (stage-0-base; it differs in lm model: the weights at its path differ)" \
        in capsys.readouterr().err
    assert snapshot(run) == before
    assert train(world, "f5", "--overwrite", "--lm.name_or_path", str(lm)) == 0
    assert snapshot(run)["stage-0-base/model.safetensors"] != before["stage-0-base/model.safetensors"]


def test_identity_is_the_recipes_non_default_fields_and_reads_the_whole_recipe_form():
    """A run is identified by the recipe fields that differ from their defaults, so a field added
    later with a default changes no identity; a run.json holding the whole recipe (as earlier
    versions wrote it) names the same run."""
    import dataclasses

    from eim.config import recipe_delta
    from eim.recipe import load_recipe
    from eim.training.run_dir import differences, same

    recipe = load_recipe("clipcap_eim", {"train.lr": 1e-4})
    delta = recipe_delta(recipe)
    assert delta["train"] == {"lr": 1e-4} and "eim" not in delta and len(delta["stages"]) == 3
    new = {"recipe": delta, "data": {"records": 1}, "models": None}
    whole = {**new, "recipe": json.loads(json.dumps(dataclasses.asdict(recipe)))}
    assert same(whole, new) and same(new, whole) and not differences(whole, new)
    other = {**new, "recipe": recipe_delta(load_recipe("clipcap_eim", {"train.lr": 2e-4}))}
    assert not same(new, other) and differences(new, other) == ["train.lr: 0.0001 -> 0.0002"]
