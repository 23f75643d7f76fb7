"""``eim demo --task llava`` and ``eim study llava-eim`` end to end at the test preset (issue 17)."""

import json
import re

from eim.cli import main
from eim.config import VISION_TRAINABLE
from eim_harness.llava import METRICS, PRESETS, recipe_for
from eim_harness.llava_report import clip_tuning, tuning_column


def test_recipes_give_both_variants_equal_loss_base_steps(tmp_path):
    p = PRESETS["tiny"]
    base = recipe_for("llava", p, tmp_path / "clip", tmp_path / "lm", 0)
    eim = recipe_for("llava_eim", p, tmp_path / "clip", tmp_path / "lm", 0)
    assert [(s.name, s.data, s.steps) for s in base.stages] == [("pretrain", "captions", 300), ("finetune", "instruct", 300)]
    assert [(s.name, s.data, s.steps) for s in eim.stages] == [
        ("st", "captions", 60), ("lm", "instruct", 60), ("pretrain", "captions", 300), ("finetune_ie", "instruct", 300)]
    assert base.stages[0].lr == eim.stages[2].lr == p.pretrain_lr and base.stages[1].lr is None
    assert eim.stages[3].losses == {"base": 1.0, "ie": 1.0} and eim.vision.trainable == "lora"
    assert [(s.name, eim.stage_template(s)) for s in eim.stages] == [
        ("st", "plain"), ("lm", "vicuna_v1"), ("pretrain", "plain"), ("finetune_ie", "vicuna_v1")]
    assert base.data.image_aspect_ratio == eim.data.image_aspect_ratio == "pad"
    assert base.vision.feature_layer == -2 and not base.vision.keep_cls


def test_the_report_names_each_way_of_tuning_clip():
    assert {m: clip_tuning(m) for m in VISION_TRAINABLE} == {
        "frozen": None, "prompt": "CLIP prompts (VPT)", "lora": "CLIP LoRA (q/v)", "full": "every CLIP weight",
        "lavin": "CLIP adapters (LaVIN)"}
    assert tuning_column(["frozen", "lora"]) == "CLIP LoRA (q/v)"
    assert tuning_column(["frozen", "prompt"]) == "CLIP prompts (VPT)"
    assert tuning_column(["prompt", "lora"]) == tuning_column(["frozen", "full"]) == "CLIP tuning parameters"


def test_llava_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "llava"
    assert main(["demo", "--task", "llava", "--preset", "test", "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == "llava" and s["metric_names"] == list(METRICS)
    assert s["data"]["train_samples"]["captions"] == 24 * 5 and s["data"]["test_samples"] == {"coco": 8, "mme": 16}
    for v, d in s["variants"].items():
        assert all(isinstance(d["metrics"][m]["mean"], float) for m in ("perception", "mme_acc", "Bleu_4", "CIDEr"))
        assert d["loss_base_steps"] == 8  # pretrain 4 + finetune 4, both variants
        run = out / "runs" / f"{v}-seed0"
        assert (run / "eval-mme" / "per_image.json").exists() and (run / "eval-coco" / "results.json").exists()
    assert s["variants"]["llava_eim"]["extra_stage_steps"] == 4
    assert {(c["metric"], c["n_images"]) for c in s["comparisons"]} == {
        ("mme_acc", 8), ("mme_acc_plus", 8), ("Bleu_4", 8), ("CIDEr", 8)}
    html = (out / "report.html").read_text()
    for ref in re.findall(r"(?:src|href)='([^']+)'", html):
        assert ref.startswith("data:image/png;base64,") or (out / ref).is_file(), ref
    assert "LLaVA + EIM" in html and "Please answer yes or no." in html
    # what llava_eim tunes in CLIP, from its run's recipe (vision.trainable: lora), in the text and the table
    assert "with CLIP LoRA (q/v) trained" in html and "<th>CLIP LoRA (q/v)</th>" in html
    assert "VPT" not in html and "CLIP prompts" not in html
    assert main(["demo", "--task", "llava", "--preset", "test", "--out", str(out)]) == 0  # re-run: caches
    again = capsys.readouterr().out
    assert "already finished" in again and "reusing" in again
    assert main(["demo", "--task", "llava", "--preset", "smol", "--out", str(out)]) == 2
    assert "no 'smol' preset" in capsys.readouterr().err


def test_llava_study_at_the_test_preset(tmp_path):
    out = tmp_path / "study"
    assert main(["study", "llava-eim", "--out", str(out), "--preset", "test", "--seeds", "2", "--quiet"]) == 0
    study = json.loads((out / "study.json").read_text())
    c = study["conditions"]["indomain"]
    assert set(c["data"]["train"]) == {"captions", "instruct"} and set(c["data"]["test"]) == {"coco", "mme"}
    assert {(x["variant"], x["metric"], x["n_seeds"]) for x in c["comparisons"]} == {
        ("llava_eim", m, 2) for m in ("mme_acc", "mme_acc_plus", "Bleu_4", "CIDEr")}
    assert len(c["variants"]["llava"]["metrics"]["perception"]["per_seed"]) == 2
    assert (tmp_path / "study" / "cache" / "encoders-llama").is_dir()  # its own encoders, never the ClipCap ones
    assert not (tmp_path / "study" / "cache" / "encoders").exists()
