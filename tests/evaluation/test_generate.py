"""`eim eval`: a tiny model trained for 3 steps on the shapes COCO data, evaluated on all three
benchmarks; the prediction files must be what `eim score` reads and score the same."""

import json
import shutil

import pytest
import torch
from helpers import tiny_recipe

from eim.cli import main
from eim.data import Sample, load_dataset
from eim.evaluation.coco import METRICS
from eim.evaluation.generate import ANSWER_STOPS, PROMPT_LAYOUT, resolve_settings
from eim.evaluation.scienceqa import CATEGORIES

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")


@pytest.fixture(scope="module")
def world(tiny_dir, tmp_path_factory):
    """Shapes data (32 px) and a run folder trained for 3 steps on its COCO captions."""
    from eim.api import train

    root = tmp_path_factory.mktemp("eval")
    data = root / "shapes"
    assert main(["data", "shapes", "--out", str(data), "--train", "16", "--val", "4",
                 "--test", "4", "--size", "32"]) == 0
    recipe = tiny_recipe(tiny_dir, "clipcap",
                         overrides={"stages.0.epochs": None, "stages.0.steps": 3})
    run = root / "run"
    train(recipe, load_dataset(data / "coco", split="train"), run, quiet=True)
    return {"root": root, "data": data, "run": run}


def evaluate(world, task, capsys, *flags):
    """`eim eval ... --json`; returns (out dir, printed scores)."""
    out = world["root"] / f"eval-{task}"
    capsys.readouterr()
    rc = main(["eval", str(world["run"]), "--task", task, "--data", str(world["data"] / task),
               "--out", str(out), "--max-new-tokens", "3", "--batch-size", "3", "--quiet",
               "--json", *flags])
    assert rc == 0
    return out, json.loads(capsys.readouterr().out)


def score(capsys, *argv):
    capsys.readouterr()
    assert main(["score", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def check_generation_json(out, world, task, **settings):
    g = read_json(out / "generation.json")
    assert g["benchmark"] == task and g["recipe"] == "clipcap" and g["split"] == "test"
    assert g["checkpoint"] == str(world["run"])
    assert g["weights"].endswith("model.safetensors")
    assert g["data"].startswith(str(world["data"] / task))
    assert g["generation"] == {"num_beams": 1, "max_new_tokens": 3, "batch_size": 3,
                               "max_prompt_tokens": 64, **settings}
    assert g["prompt"]["layout"] == PROMPT_LAYOUT["raw"] and g["prompt"]["template"] == "raw" and g["prompt"]["image_tokens"] == 2
    return g


@needs_java
def test_eval_coco(world, capsys):
    out, printed = evaluate(world, "coco", capsys)
    results = read_json(out / "results.json")
    karpathy = read_json(world["data"] / "coco" / "dataset_coco.json")
    test_ids = {im["cocoid"] for im in karpathy["images"] if im["split"] == "test"}
    assert sorted(r["image_id"] for r in results) == sorted(test_ids)  # every image, once
    assert all(set(r) == {"image_id", "caption"} and isinstance(r["caption"], str)
               for r in results)
    scores = read_json(out / "scores.json")
    assert scores == printed
    assert set(METRICS) <= set(scores) and scores["n_images"] == len(test_ids)
    g = check_generation_json(out, world, "coco", stop_text=".")
    assert g["prompt"]["first_instruction"] == "" and g["predictions"] == "results.json"
    # The same library code as `eim score`: the written file scores the same there.
    gt = str(world["data"] / "coco" / "dataset_coco.json")
    assert score(capsys, "coco", "--gt", gt, "--pred", str(out / "results.json")) == scores


def test_eval_scienceqa(world, capsys):
    out, printed = evaluate(world, "scienceqa", capsys, "--beams", "2")
    sqa = world["data"] / "scienceqa"
    test_qids = read_json(sqa / "pid_splits.json")["test"]
    preds = read_json(out / "predictions.json")
    assert sorted(preds) == sorted(map(str, test_qids))
    assert all(isinstance(v, str) for v in preds.values())
    scores = read_json(out / "scores.json")
    assert scores == printed
    assert set(CATEGORIES) | {"Avg", "n", "unparsed"} <= set(scores)
    assert scores["n"] == len(test_qids)
    g = check_generation_json(out, world, "scienceqa", stop_text=ANSWER_STOPS, num_beams=2)
    assert g["prompt"]["first_instruction"].startswith("Question: ")
    assert score(capsys, "scienceqa", "--problems", str(sqa / "problems.json"),
                 "--pred", str(out / "predictions.json")) == scores


def test_eval_mme(world, capsys):
    out, printed = evaluate(world, "mme", capsys)
    ds = load_dataset(world["data"] / "mme", split="test")
    expected = {}
    for s in ds:
        m = s.meta
        expected.setdefault(m["subtask"], []).append((m["image_name"], m["question"], m["answer"]))
    files = sorted(p.name for p in (out / "mme_results").iterdir())
    assert files == sorted(f"{sub}.txt" for sub in expected)
    for sub, rows in expected.items():
        lines = (out / "mme_results" / f"{sub}.txt").read_text(encoding="utf-8").splitlines()
        fields = [ln.split("\t") for ln in lines]
        assert all(len(f) == 4 for f in fields)
        assert [tuple(f[:3]) for f in fields] == rows  # every question, in the dataset's order
        assert all(fields[i][0] == fields[i + 1][0] for i in range(0, len(fields), 2))
    scores = read_json(out / "scores.json")
    assert scores == printed
    assert {"perception", "cognition", "subtasks"} <= set(scores)
    assert set(scores["subtasks"]) == set(expected) and scores["cognition"] is None
    g = check_generation_json(out, world, "mme", stop_text=".")
    assert g["prompt"]["first_instruction"].endswith("Please answer yes or no.")
    assert score(capsys, "mme", "--results", str(out / "mme_results")) == scores


def test_batched_generation_matches_one_by_one_and_takes_text_only(world):
    """Left-padded batches decode as single prompts do; text-only prompts get no image."""
    from eim.api import load_for_inference
    from eim.evaluation.generate import generate_predictions

    model, tok, proc, recipe = load_for_inference(world["run"])
    sqa = load_dataset(world["data"] / "scienceqa", split="train")
    image = next(s for s in sqa if s.image)
    samples = [image, Sample(index=1, image=None, instruction="a red", response=""),
               Sample(index=2, image=image.image, instruction="", response="")]
    kw = dict(num_beams=1, max_new_tokens=4, stop_text=None, max_prompt_tokens=64, quiet=True)
    batched = generate_predictions(model, tok, proc, recipe, samples, batch_size=3, **kw)
    single = [generate_predictions(model, tok, proc, recipe, [s], batch_size=1, **kw)[0]
              for s in samples]
    assert batched == single and len(batched) == 3
    only_text = generate_predictions(model, tok, proc, recipe, samples[1:2], batch_size=1, **kw)
    assert only_text == single[1:2]


def test_task_settings(tiny_dir):
    r = tiny_recipe(tiny_dir, "clipcap")  # generation: beams 1, 8 new tokens, stop '.'
    coco = resolve_settings(r, "coco")
    assert coco == {"num_beams": 1, "max_new_tokens": 8, "stop_text": ".",
                    "batch_size": r.generation.batch_size, "max_prompt_tokens": 64}
    sqa = resolve_settings(r, "scienceqa")
    assert sqa["max_new_tokens"] == 64  # the cap, for a model that never says its answer
    assert sqa["stop_text"] == ANSWER_STOPS and "The answer is B." in ANSWER_STOPS  # stop there
    assert resolve_settings(r, "scienceqa", stop_text="")["stop_text"] is None  # the rationale too
    assert resolve_settings(r, "scienceqa", max_new_tokens=5, stop_text="!")["max_new_tokens"] == 5
    assert resolve_settings(r, "coco", stop_text="")["stop_text"] is None  # '' = EOS only
    with pytest.raises(ValueError):
        resolve_settings(r, "coco", max_prompt_tokens=-1)


def test_task_must_match_the_data(world, capsys):
    rc = main(["eval", str(world["run"]), "--task", "mme", "--data",
               str(world["data"] / "coco"), "--out", str(world["root"] / "bad")])
    assert rc == 2
    assert "needs a mme dataset" in capsys.readouterr().err


class Say:
    """A logits processor that makes the model say ``ids`` (then EOS), and counts the steps."""

    def __init__(self, ids, eos):
        self.ids, self.eos, self.steps = ids, eos, 0

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1]  # with inputs_embeds only, input_ids holds the new tokens
        self.steps = max(self.steps, step + 1)
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.ids[step] if step < len(self.ids) else self.eos] = 0
        return forced


@pytest.mark.parametrize("beams", [1, 2])
def test_scienceqa_decoding_stops_at_the_answer_sentence(world, beams):
    """Only the letter is scored, so decoding ends with "The answer is X.", not 64 tokens later."""
    from eim.api import load_for_inference
    from eim.training.collate import Collator
    from eim.model.splice import TextEncoder

    model, tok, proc, recipe = load_for_inference(world["run"])
    text = "The answer is B. BECAUSE: a red circle that is on white one . a blue square ." * 3
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text and len(ids) > 30
    sample = next(s for s in load_dataset(world["data"] / "scienceqa", split="test") if s.image)
    batch = Collator(TextEncoder(tok, 64), proc, mode="prompt")([sample])
    say = Say(ids, tok.eos_token_id)
    cap = 30  # the tiny GPT-2 has 128 positions; the prompt takes most of them
    out = model.generate(batch, tok, num_beams=beams, max_new_tokens=cap, stop_text=ANSWER_STOPS,
                         logits_processor=[say])
    assert out == ["The answer is B."]
    answer = len(tok("The answer is B.", add_special_tokens=False).input_ids)
    assert say.steps <= answer + 1 < cap  # stopped at the sentence (a token may straddle the '.')
    say = Say(ids, tok.eos_token_id)  # no stop: the rationale too, up to the cap
    out = model.generate(batch, tok, num_beams=beams, max_new_tokens=cap, stop_text=None, logits_processor=[say])
    assert say.steps == cap and out[0].startswith("The answer is B. BECAUSE:")


@pytest.fixture(scope="module")
def broken(world, tmp_path_factory):
    """A copy of the shapes data with one test image of each task truncated (header intact)."""
    from format_files import truncate

    root = tmp_path_factory.mktemp("broken") / "shapes"
    shutil.copytree(world["data"], root)
    bad = {}
    karpathy = read_json(root / "coco" / "dataset_coco.json")
    rec = next(im for im in karpathy["images"] if im["split"] == "test")
    truncate(root / "coco" / rec["filepath"] / rec["filename"])
    bad["coco"] = rec["cocoid"]
    qid = next(q for q in read_json(root / "scienceqa" / "pid_splits.json")["test"]
               if read_json(root / "scienceqa" / "problems.json")[q].get("image"))
    sqa = load_dataset(root / "scienceqa", split="test")
    truncate(next(s.image for s in sqa if s.meta["qid"] == qid))
    bad["scienceqa"] = qid
    s = next(iter(load_dataset(root / "mme")))
    truncate(s.image)
    bad["mme"] = f"{s.meta['subtask']}/{s.image_id.rsplit('.', 1)[0]}"
    return root, bad


@pytest.mark.parametrize("task", [pytest.param("coco", marks=needs_java), "scienceqa", "mme"])
def test_eval_skip_bad_scores_the_rest_and_lists_what_it_skipped(world, broken, task, capsys):
    root, bad = broken
    out = world["root"] / f"skip-{task}"
    argv = ["eval", str(world["run"]), "--task", task, "--data", str(root / task), "--out", str(out),
            "--max-new-tokens", "3", "--batch-size", "3", "--quiet"]
    assert main(argv) == 2  # without --skip-bad: stops on the image, naming it
    assert "cannot decode image" in capsys.readouterr().err
    assert main([*argv, "--skip-bad"]) == 0
    table = capsys.readouterr().out
    scores = read_json(out / "scores.json")
    assert [s["id"] for s in scores["skipped"]] == [bad[task]]
    assert scores["skipped"][0]["reason"].startswith("cannot decode image ")
    full = read_json(world["root"] / f"eval-{task}" / "scores.json") if (
        world["root"] / f"eval-{task}" / "scores.json").exists() else None
    n = {"coco": "n_images", "scienceqa": "n"}.get(task)
    if n:
        ref = load_dataset(world["data"] / task, split="test", mode="eval")
        assert scores[n] == len(ref) - 1 and (full is None or full[n] == len(ref))
        what = "images" if task == "coco" else "problems"
        assert f": {len(ref) - 1} {what} scored (1 bad record skipped: {bad[task]})" in table
    else:
        assert f"MME: {sum(s['images'] for s in scores['subtasks'].values())} images scored (1 bad record skipped: {bad[task]})" in table
    assert read_json(out / "generation.json")["skipped"][0]["id"] == str(bad[task])
    if task == "scienceqa":  # `eim score --exclude` reproduces it
        again = score(capsys, "scienceqa", "--problems", str(root / task / "problems.json"),
                      "--pred", str(out / "predictions.json"), "--exclude", str(bad[task]))
        assert {k: v for k, v in again.items() if k != "skipped"} == {k: v for k, v in scores.items() if k != "skipped"}


def test_failed_eval_leaves_an_earlier_one_as_it_was(world, capsys, monkeypatch):
    import eim.evaluation.generate as gen
    from eim.errors import EIMError

    out = world["root"] / "again-mme"
    argv = ["eval", str(world["run"]), "--task", "mme", "--data", str(world["data"] / "mme"),
            "--out", str(out), "--max-new-tokens", "2", "--quiet"]
    assert main(argv) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def fail(*a, **k):
        raise EIMError("the scorer broke")

    monkeypatch.setattr(gen, "score_predictions", fail)
    assert main([*argv[:-2], "3", "--quiet"]) == 2  # other settings: would rewrite every file
    assert "the scorer broke" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".again-mme")) == []
