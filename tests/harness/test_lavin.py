"""`eim demo --task scienceqa|mme` end to end on a minimal size (issue 7)."""

import json
import re

import pytest

from eim.cli import main
from eim_harness.lavin import MME_METRICS, PRESETS, SQA_METRICS, VARIANTS, Head, fit_lengths, recipe_for


def _refs_exist(out):
    html = (out / "report.html").read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", html)
    assert any(r.endswith(".png") for r in refs)
    for r in refs:
        assert r.startswith("data:image/png;base64,") or (out / r).is_file(), r
    return html


def _check_variants(summary, metrics):
    assert set(summary["variants"]) == set(VARIANTS)
    steps = summary["schedule"]["steps"]
    for v, d in summary["variants"].items():
        for m in metrics:
            assert isinstance(d["metrics"][m]["mean"], float), (v, m)
        assert d["loss_base_steps"] == steps, v  # equal training on the final objective
        assert v == "lavin" or d["delta_vs_baseline"][metrics[-1]] is not None
    eim = summary["variants"]["lavin_eim"]
    assert [s["name"] for s in eim["stages"]] == ["st", "lm", "adapter", "base_ie"]
    assert eim["extra_stage_steps"] == summary["schedule"]["st_steps"] + summary["schedule"]["lm_steps"]
    assert summary["variants"]["lavin"]["extra_stage_steps"] == 0
    for d in summary["variants"].values():  # every training sample kept its answer: loss_base was not 0
        assert all(s["final"]["loss_base"] > 0 for s in d["stages"] if "loss_base" in s["final"])


def test_scienceqa_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "sqa"
    assert main(["demo", "--task", "scienceqa", "--preset", "test", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "scienceqa" and summary["metric_names"] == list(SQA_METRICS)
    _check_variants(summary, ("Avg", "IMG", "G1-6"))
    for d in summary["variants"].values():
        assert set(d["metrics"]) == set(SQA_METRICS)
        assert d["extra"]["n"] == summary["data"]["test_samples"]
    assert summary["data"]["test_text_only"] >= 1 and summary["data"]["test_with_image"] >= 1
    problems = json.loads((out / "data" / "scienceqa" / "problems.json").read_text())
    test_qids = json.loads((out / "data" / "scienceqa" / "pid_splits.json").read_text())["test"]
    for v in VARIANTS:  # every test problem was predicted, text-only ones included
        preds = json.loads((out / "runs" / f"scienceqa-{v}-seed0" / "eval-scienceqa" / "predictions.json").read_text())
        assert set(preds) == set(test_qids)
        assert any(not problems[q].get("image") for q in preds)
    html = _refs_exist(out)
    assert "text only" in html and "NAT" in html
    lm = json.loads((out / "encoders-llama" / "scienceqa" / "tiny" / "lm" / "pretrain.json").read_text())
    assert lm["drills"]["problems"] == 16  # the tiny LLaMA is drilled before LaVIN (design §10)
    assert "LaVIN + EIM" in capsys.readouterr().out
    assert main(["demo", "--task", "scienceqa", "--preset", "test", "--out", str(out)]) == 0  # re-run: caches
    again = capsys.readouterr().out
    assert "reusing" in again and "already finished" in again
    assert json.loads((out / "summary.json").read_text())["variants"]["lavin"]["metrics"] == \
        summary["variants"]["lavin"]["metrics"]


def test_mme_demo_end_to_end(tmp_path):
    out = tmp_path / "mme"
    assert main(["demo", "--task", "mme", "--preset", "test", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "mme"
    _check_variants(summary, MME_METRICS)
    for v in VARIANTS:
        res = out / "runs" / f"mme-{v}-seed0" / "eval-mme" / "mme_results"
        rows = sum(len(f.read_text().splitlines()) for f in res.glob("*.txt"))
        assert rows == summary["data"]["test_samples"]
    _refs_exist(out)
    # its LLM is drilled on yes/no questions, in a folder of its own (the ScienceQA task's is another)
    assert '"yesno"' in (out / "encoders-llama" / "mme" / "tiny" / "fingerprint.json").read_text()


def test_presets_build_recipes_with_equal_base_steps(tmp_path):
    for task, presets in PRESETS.items():
        for name, p in presets.items():
            base = recipe_for("lavin", p, tmp_path / "clip", tmp_path / "lm", seed=0)
            eim = recipe_for("lavin_eim", p, tmp_path / "clip", tmp_path / "lm", seed=0)
            assert [s.steps for s in base.stages] == [p.steps], (task, name)
            assert sum(s.steps for s in eim.stages if "base" in s.losses) == p.steps, (task, name)
            assert eim.lm.trainable == base.lm.trainable == "lavin"


def test_fit_lengths_keep_prompt_and_answer_sentence():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from eim.data.sample import Sample
    from eim.model.splice import IGNORE, TextEncoder

    words = "Question : Which is red ? Options ( A ) B The answer is . BECAUSE a long rationale here".split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words + ["<eos>", "<unk>"])}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<eos>")
    samples = [Sample(index=0, image=None, instruction="Question : Which is red ? Options ( A ) ( B )",
                      response="The answer is A . BECAUSE: a long rationale here", image_id="1", meta={})]
    max_length, max_prompt = fit_lengths(tok, "scienceqa", samples, samples)
    assert max_prompt == 13  # no BOS: the 13 instruction tokens
    ids, labels, _ = TextEncoder(tok, max_length).encode(samples[0].instruction, samples[0].response)
    kept = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert kept.startswith("The answer is A") and "rationale" not in kept


def test_head_keeps_indices():
    class DS(list):
        format, split, mode, files = "scienceqa", "train", "train", ["x"]

    h = Head(DS(range(10)), 4)
    assert len(h) == 4 and list(h) == [0, 1, 2, 3] and h.files == ["x"] and h.format == "scienceqa"
    with pytest.raises(IndexError):
        h[4]
