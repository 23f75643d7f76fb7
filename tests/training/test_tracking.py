"""What a running stage reports (eim.training.progress, tracking, validation): metrics rows, the
trackers, validation during training, and that watching a run never changes what it trains."""

import json

import pytest
import torch
from helpers import final_weights, steps, tiny_recipe

from eim.api import train
from eim.data.loader import load_dataset
from eim.errors import ConfigError, DataError
from eim.io import load_tensors
from eim.model.splice import TextEncoder
from eim.training.collate import Collator
from eim.training.progress import read_metrics
from eim.training.tracking import batch_tokens, flat, image_positions


@pytest.fixture(scope="module")
def coco(shapes):
    return load_dataset(shapes / "coco", "coco", split="train")


def stage_weights(run, recipe):
    return [load_tensors(run / f"stage-{k}-{s.name}" / "model.safetensors")[0] for k, s in enumerate(recipe.stages)]


def test_watching_a_run_leaves_its_weights_alone(tiny_dir, coco, tmp_path):
    """Validation every 2 steps (with the contrastive terms on validation banks) and a TensorBoard
    tracker: every stage's weights equal those of the same run unwatched, bit for bit; the rows and
    the tracker's scalars hold what the issue asks for."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = steps("e", 4, 3)
    plain = tiny_recipe(tiny_dir, "clipcap_eim", overrides=over)
    train(plain, coco, tmp_path / "plain", quiet=True)
    watched = tiny_recipe(tiny_dir, "clipcap_eim", overrides={
        **over, "train.eval_every": 2, "train.eval_samples": 6, "train.eval_banks": True,
        "train.report_to": ["tensorboard"], "train.run_name": "tb"})
    train(watched, coco, tmp_path / "watched", quiet=True)
    for a, b in zip(stage_weights(tmp_path / "plain", plain), stage_weights(tmp_path / "watched", watched)):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key

    rows_by_stage = [read_metrics(tmp_path / "watched" / f"stage-{k}-{s.name}") for k, s in enumerate(watched.stages)]
    for k, (stage, rows) in enumerate(zip(watched.stages, rows_by_stage)):
        train_rows = [r for r in rows if "loss" in r]
        val_rows = [r for r in rows if any(x.startswith("val_") for x in r)]
        assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
        assert [r["global_step"] for r in train_rows] == [4 * k + s for s in (1, 2, 3, 4)]
        assert [r["step"] for r in val_rows] == [2, 4]
        for r in train_rows:
            assert {f"loss_{n}" for n in stage.losses} <= set(r)
            assert {n: r[f"weight_{n}"] for n in stage.losses} == stage.losses
            assert r["lr_group0"] == r["lr"] and r["samples_per_s"] > 0 and r["tokens_per_s"] > r["samples_per_s"]
            assert "grad_norm" in r
        for r in val_rows:  # every loss term of the stage, on its validation banks
            assert set(r) == {"step", "global_step"} | {f"val_loss_{n}" for n in stage.losses}
        summary = json.loads((tmp_path / "watched" / f"stage-{k}-{stage.name}" / "stage.json").read_text())
        assert summary["samples_per_s"] > 0 and summary["tokens_per_s"] > 0
    assert (tmp_path / "watched" / "banks" / "val").is_dir()

    # the TensorBoard scalars are the metrics rows, on one step axis over the stages
    events = sorted((tmp_path / "watched" / "tracking" / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    loss = {e.step: e.value for e in acc.Scalars("loss")}
    expected = {r["global_step"]: r["loss"] for rows in rows_by_stage for r in rows if "loss" in r}
    assert loss.keys() == expected.keys()
    for step, value in expected.items():
        assert loss[step] == pytest.approx(value, rel=1e-6)
    val = {e.step for e in acc.Scalars("val_loss_base")}
    assert val == {4 * k + s for k, stage in enumerate(watched.stages) if "base" in stage.losses for s in (2, 4)}
    assert val
    run = json.loads((tmp_path / "watched" / "tracking" / "run.json").read_text())
    assert run["name"] == "tb"

    # watching is not part of a run's identity: the unwatched command resumes the watched run
    summaries = train(plain, coco, tmp_path / "watched", quiet=True, resume=True)
    assert len(summaries) == 3


def test_eval_generate_scores_each_stage(tiny_dir, coco, tmp_path):
    recipe = tiny_recipe(tiny_dir, "clipcap", overrides={**steps("c", 2), "train.eval_generate": True,
                                                         "train.eval_samples": 3})
    train(recipe, coco, tmp_path, quiet=True)
    stage = tmp_path / "stage-0-base"
    preds = json.loads((stage / "eval-val" / "results.json").read_text())
    assert len(preds) == 3  # the first 3 validation images
    rows = [r for r in read_metrics(stage) if "val_CIDEr" in r]
    assert len(rows) == 1 and rows[0]["step"] == 2
    assert {"val_Bleu_4", "val_ROUGE_L", "val_CIDEr"} <= set(rows[0])


def test_eval_generate_scores_mme_on_whole_images(tiny_dir, coco, shapes, tmp_path):
    mme = load_dataset(shapes / "mme_val", "mme")
    recipe = tiny_recipe(tiny_dir, "clipcap", overrides={**steps("c", 1), "train.eval_generate": True,
                                                         "train.eval_samples": 5})
    train(recipe, coco, tmp_path, quiet=True, val_datasets={"main": mme})
    rows = [r for r in read_metrics(tmp_path / "stage-0-base") if "val_mme_acc" in r]
    assert len(rows) == 1 and 0 <= rows[0]["val_mme_acc_plus"] <= rows[0]["val_mme_acc"] <= 100
    lines = [x for f in (tmp_path / "stage-0-base" / "eval-val" / "mme_results").glob("*.txt")
             for x in f.read_text().splitlines()]
    assert len(lines) == 4  # 5 questions asked for: 2 whole images


def test_validation_refuses_what_it_cannot_do(tiny_dir, data, shapes, tmp_path):
    recipe = tiny_recipe(tiny_dir, "clipcap", overrides={**steps("c", 2), "train.eval_every": 1})
    with pytest.raises(DataError, match="--val-data"):  # a list dataset holds no validation split
        train(recipe, data, tmp_path / "a", quiet=True)
    assert not list((tmp_path / "a").glob("stage-*"))
    llava = load_dataset(shapes / "llava" / "instruct.json")
    recipe = tiny_recipe(tiny_dir, "clipcap", overrides={**steps("c", 2), "train.eval_generate": True})
    with pytest.raises(ConfigError, match="eval_generate"):
        train(recipe, llava, tmp_path / "b", quiet=True, val_datasets={"main": llava})
    with pytest.raises(ConfigError, match="eval_every"):
        tiny_recipe(tiny_dir, "clipcap", overrides={"train.eval_every": 0})


def test_batch_tokens_counts_text_and_image_positions(clipcap, coco):
    model, tok, proc = clipcap
    samples = [coco[i] for i in range(3)]
    batch = Collator(TextEncoder(tok), proc)(samples)
    text = sum(len(TextEncoder(tok).encode_sample(s)[0]) for s in samples)
    assert image_positions(model) == model.projector.prefix_length
    assert batch_tokens(batch, image_positions(model)) == text + 3 * model.projector.prefix_length


def test_flat_config():
    assert flat({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": "null"}


def test_wandb_offline_run(tiny_dir, data, tmp_path, monkeypatch):
    """wandb, when installed, in offline mode: the run writes under RUN/tracking/wandb and resumes
    its own id."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = tiny_recipe(tiny_dir, "clipcap", overrides={**steps("c", 2), "train.report_to": ["wandb"]})
    train(recipe, data, tmp_path, quiet=True)
    state = json.loads((tmp_path / "tracking" / "run.json").read_text())
    offline = list((tmp_path / "tracking" / "wandb").glob(f"offline-run-*-{state['id']}"))
    assert offline, list((tmp_path / "tracking").rglob("*"))[:10]
    assert final_weights(tmp_path)
    train(recipe, data, tmp_path, quiet=True, resume=True)  # --resume continues the same tracker run
    assert json.loads((tmp_path / "tracking" / "run.json").read_text())["id"] == state["id"]
    assert len(list((tmp_path / "tracking" / "wandb").glob(f"offline-run-*-{state['id']}"))) >= 1
