"""``eim study``: specs, selection on validation only, paired intervals, resumable runs (eim_harness.study)."""

import json
from dataclasses import replace

import pytest

from eim.cli import main
from eim_harness.study import load_spec, spec_names
from eim.errors import ConfigError

SPEC = """
name: tiny-study
title: a three-variant study with a sweep
task: coco
conditions: [transfer]
reference: clipcap
compare: previous
metrics: [Bleu_4, CIDEr]
table: [Bleu_4, METEOR, CIDEr]
seeds: 2
variants:
  - {name: clipcap, label: baseline, recipe: clipcap}
  - {name: structure, recipe: clipcap_eim, overrides: {stages.drop: "st,lm", stages.base_ie.losses: {base: 1.0}}}
  - {name: eim, recipe: clipcap_eim}
sweeps:
  - {variants: [eim], grid: {stages.base_ie.losses.ie: [1.0, 0.5]}, metric: CIDEr}
"""


def test_shipped_specs_load_and_build_their_recipes(tmp_path):
    from eim_harness.registry import TASKS

    assert {f"clipcap-t{k}" for k in range(3, 10)} | {"llava-eim", "clipcap-eim"} <= set(spec_names())
    for name in spec_names():
        spec = load_spec(name)
        assert spec.select_on != "test" and spec.reference in [v.name for v in spec.variants]
        task = TASKS[spec.task]
        schedule = task.schedules["test"]
        for v in spec.variants:  # every variant's overrides give a valid recipe
            task.recipe(v.recipe, schedule, tmp_path / "clip", tmp_path / "lm", 0, extra=v.overrides)
        assert set(spec.metrics) <= set(task.interval_metrics)  # every compared metric has its interval


def test_no_shipped_title_names_a_seed_count():
    """The report heads a study with the seeds it ran (a one-seed smoke run of a ten-seed spec is
    not "ten seeds"), so a title naming its own count would contradict it."""
    import re

    counts = r"\b(\d+|one|two|three|four|five|six|seven|eight|nine|ten|twenty)[ -]seeds?\b"
    assert not [n for n in spec_names() if re.search(counts, load_spec(n).title, re.I)]


def test_headline_spec_shares_clipcap_t4s_runs():
    """clipcap-eim's variants and sweep are clipcap-t4's first and last, so one cache serves both."""
    head, t4 = load_spec("clipcap-eim"), load_spec("clipcap-t4")
    assert head.variants == [t4.variants[0], replace(t4.variants[-1], label=head.variants[1].label)]
    assert head.sweeps == t4.sweeps and head.seeds == 10 and head.conditions == t4.conditions


def test_study_end_to_end_then_rerun_reuses_runs(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "study"
    assert main(["study", str(spec), "--out", str(out), "--preset", "test", "--quiet"]) == 0
    study = json.loads((out / "study.json").read_text())
    c = study["conditions"]["transfer"]
    assert c["world"]["pretrain"] == "web" and c["data"]["test"]["records"] == 8
    assert [s["variant"] for s in c["selection"]] == ["eim"] and c["selection"][0]["split"] == "val"
    assert c["selection"][0]["unit"] == "points" and study["seeds"] == study["spec_seeds"] == 2  # as the tables
    assert c["variants"]["eim"]["overrides"]["stages.base_ie.losses.ie"] == c["selection"][0]["chosen"][
        "stages.base_ie.losses.ie"]
    for v in c["variants"].values():
        assert len(v["metrics"]["Bleu_4"]["per_seed"]) == 2 and v["metrics"]["Bleu_4"]["std"] is not None
    pairs = {(x["variant"], x["reference"], x["metric"]) for x in c["comparisons"]}
    assert pairs == {(v, r, m) for v, r in [("structure", "clipcap"), ("eim", "clipcap"), ("eim", "structure")]
                     for m in ("Bleu_4", "CIDEr")}
    for x in c["comparisons"]:
        assert x["split"] == "test" and x["n_seeds"] == 2 and x["n_images"] == 8
        assert x["ci95"][0] <= x["ci95"][1]
        means = c["variants"][x["variant"]]["metrics"][x["metric"]]["mean"] - \
            c["variants"][x["reference"]]["metrics"][x["metric"]]["mean"]
        assert x["diff"] == pytest.approx(means, abs=1e-6)  # the same numbers as the table
    assert study["reproduce"]["versions"]["eim"] and study["reproduce"]["spec_sha256"]
    html = (out / "report.html").read_text()
    assert "forest_transfer_Bleu_4.png" in html and (out / "plots" / "forest_transfer_CIDEr.png").is_file()
    # nothing is trained again on a re-run: every run and evaluation is reused
    runs = sorted((out / "cache" / "runs").rglob("stage.json"))
    stamps = [p.stat().st_mtime_ns for p in runs]
    assert main(["study", str(spec), "--out", str(out), "--preset", "test", "--quiet"]) == 0
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert json.loads((out / "study.json").read_text())["conditions"]["transfer"]["comparisons"] == c["comparisons"]
    printed = capsys.readouterr().out
    assert "se seeds" in printed and "comparisons" in printed.splitlines()[-2]  # what would narrow them
    for x in c["comparisons"]:  # the interval is diff ± t·se, its error split in two
        assert x["se"] == pytest.approx((x["se_seeds"] ** 2 + x["se_items"] ** 2) ** 0.5)
        assert x["ci95"][1] - x["diff"] == pytest.approx(x["diff"] - x["ci95"][0])


def test_the_note_says_what_would_narrow_the_intervals():
    from eim_harness.commands.study import interval_note

    seedy = [{"se_seeds": 0.4, "se_items": 0.1}, {"se_seeds": 0.1, "se_items": 0.2}]
    assert "seeds are most of the error in 1 of 2" in interval_note(seedy, 3)
    assert "more test images would narrow" in interval_note([{"se_seeds": 0.1, "se_items": 0.2}], 3)
    assert "one seed" in interval_note([{"se_seeds": 0.0, "se_items": 0.2}], 1)


def test_selecting_on_the_test_split_is_refused(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("seeds: 2", "seeds: 2\nselect_on: test"))
    assert main(["study", str(spec), "--out", str(tmp_path / "o"), "--preset", "test"]) == 2
    assert "test split is refused" in capsys.readouterr().err
    assert main(["study", "clipcap-t4", "--out", str(tmp_path / "o"), "--select-on", "test"]) == 2
    assert "test split is refused" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cache").exists()  # refused before any work
    assert main(["study", "clipcap-t4", "--out", str(tmp_path / "o"), "--select-on", "train"]) == 2
    assert "allowed val" in capsys.readouterr().err  # a split the studies do not score


def test_list_and_bad_specs(tmp_path, capsys):
    assert main(["study", "--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "clipcap-t4" in lines
    assert " 10 seeds  ClipCap vs ClipCap + EIM" in lines["clipcap-eim"]  # the spec's seed count
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("reference: clipcap", "reference: nope"))
    with pytest.raises(ConfigError, match="include the reference 'nope'"):
        load_spec(bad)
    bad.write_text(SPEC + "\nfoo: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_spec(bad)


def test_lavin_scienceqa_study_runs_with_intervals(tmp_path):
    """lavin-sqa's task through eim study: the tiny LLaMA drilled first, text lengths fitted to the
    data, accuracy by category per seed, Avg and IMG compared with intervals."""
    spec = tmp_path / "lavin.yaml"
    spec.write_text(load_spec_text("lavin-sqa").replace("seeds: 3", "seeds: 2"))
    out = tmp_path / "study"
    assert main(["study", str(spec), "--out", str(out), "--preset", "test", "--quiet"]) == 0
    c = json.loads((out / "study.json").read_text())["conditions"]["indomain"]
    assert set(c["variants"]) == {"lavin", "lavin_eim", "lavin_eim_keep"}
    assert {(x["variant"], x["metric"]) for x in c["comparisons"]} == {
        (v, m) for v in ("lavin_eim", "lavin_eim_keep") for m in ("Avg", "IMG")}
    for v in c["variants"].values():
        assert len(v["metrics"]["Avg"]["per_seed"]) == 2 and v["metrics"]["IMG"]["mean"] is not None
    keep = c["variants"]["lavin_eim_keep"]["stages"]
    assert [st["name"] for st in keep] == ["st", "lm", "adapter", "base_ie"]
    from eim_harness.registry import TASKS

    v = load_spec("lavin-sqa").variants[2]
    task = TASKS["scienceqa"]
    built = task.recipe(v.recipe, task.schedules["test"], tmp_path / "c", tmp_path / "l", 0, extra=v.overrides)
    assert list(built.stages[3].trainable) == ["vision", "projector"]  # the LLM adapters stay as the Adapter stage left them
    lm = next((out / "cache" / "encoders-scienceqa").glob("*/tiny/lm/pretrain.json"))  # the study's own encoders
    assert json.loads(lm.read_text())["drills"]["problems"] == 16


def load_spec_text(name):
    from eim_harness.study import SPEC_DIR

    return (SPEC_DIR / f"{name}.yaml").read_text()


def test_lavin_mme_study_runs_on_the_chat_mixture(tmp_path):
    """lavin-mme: LaVIN and LaVIN + EIM trained on the chat mixture (LLaVA + yes/no questions +
    Alpaca), lambda_IE chosen on the validation questions, scored on MME with accuracy / accuracy+ intervals."""
    spec = tmp_path / "mme.yaml"
    spec.write_text(load_spec_text("lavin-mme").replace("seeds: 3", "seeds: 2"))
    out = tmp_path / "study"
    assert main(["study", str(spec), "--out", str(out), "--preset", "test", "--quiet"]) == 0
    c = json.loads((out / "study.json").read_text())["conditions"]["indomain"]
    assert {(x["variant"], x["metric"]) for x in c["comparisons"]} == {
        ("lavin_eim", "mme_acc"), ("lavin_eim", "mme_acc_plus")}
    for v in c["variants"].values():
        assert len(v["metrics"]["mme_acc"]["per_seed"]) == 2
        assert all(0 <= x <= 100 for x in v["metrics"]["count_acc"]["per_seed"])
    train = c["data"]["train"]
    assert train["format"] == "mixture" and [p["format"] for p in train["parts"]] == ["llava", "llava", "alpaca"]
    lm = next((out / "cache" / "encoders-mme").glob("*/tiny/lm/pretrain.json"))
    assert json.loads(lm.read_text())["drills"]["problems"] == 16  # the yes/no drills
    sel = c["selection"]
    assert [(x["variant"], x["split"], len(x["tried"])) for x in sel] == [("lavin_eim", "val", 3)]
    # the training data changes under the same encoders (a caption rewritten): new runs, no clash
    vqa = next((out / "cache").glob("data/*/vqa/llava_vqa.json"))
    vqa.write_text(vqa.read_text().replace('"caption": "', '"caption": "Look: ', 1))
    assert main(["study", str(spec), "--out", str(out), "--preset", "test", "--quiet"]) == 0
    again = json.loads((out / "study.json").read_text())["conditions"]["indomain"]
    assert set(again["variants"]["lavin"]["run_dirs"]).isdisjoint(c["variants"]["lavin"]["run_dirs"])
