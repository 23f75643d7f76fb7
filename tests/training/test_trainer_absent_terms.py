"""A loss term with no items in a step (loss_IE on a text-only batch) is absent, never 0: from the
step's metrics row and tracker values, from ``loss`` (the weighted sum of the terms present), from
the plot's points; ``eim runs show`` gives each term's latest value (issue 35 item 6)."""

import json

import pytest
from helpers import TEXTS, llava_datasets, tiny_recipe

from eim.api import train
from eim.cli import main
from eim.data.sample import Sample
from eim.plot import _series
from eim.training.progress import read_metrics

STAGES = ("st", "lm", "pretrain", "finetune_ie")


@pytest.fixture(scope="module")
def text_only_run(tiny_dir, tmp_path_factory):
    """llava_eim at tiny size; its instructions are 16 image rows and 8 text-only ones, grouped by
    modality (the recipe's sampler) into batches of 4: two of finetune_ie's six steps are text-only."""
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("absent")
    data = llava_datasets(root / "images")
    rows = data["instruct"].samples
    rows += [Sample(index=len(rows) + i, image=None, instruction="Say it again.", response=TEXTS[i]) for i in range(8)]
    over = {"train.max_length": 128, "train.batch_size": 4, "train.report_to": ["tensorboard"], "train.run_name": "tb",
            **{f"stages.{k}.epochs": None for k in range(4)},
            **{f"stages.{k}.steps": n for k, n in enumerate((1, 1, 1, 6))}}
    recipe = tiny_recipe(tiny_dir, "llava_eim", lm="llama", overrides=over)
    assert recipe.train.group_by == "modality_length"
    out = root / "run"
    stages = train(recipe, None, out, datasets=data, quiet=True)
    return out, recipe, stages


def test_a_text_only_step_logs_no_loss_ie(text_only_run):
    out, recipe, _ = text_only_run
    weights = recipe.stages[3].losses
    rows = [r for r in read_metrics(out / "stage-3-finetune_ie") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    without = [r for r in rows if "loss_ie" not in r]
    assert len(without) == 2  # the two text-only batches (8 of 24 rows)
    for r in rows:
        assert r["loss_base"] > 0 and r.get("loss_ie", 1.0) > 0  # never a 0 for "no items"
        assert r["loss"] == pytest.approx(sum(w * r[f"loss_{n}"] for n, w in weights.items() if f"loss_{n}" in r),
                                          rel=1e-12)
    for r in without:
        assert r["loss"] == pytest.approx(weights["base"] * r["loss_base"], rel=1e-12)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(next((out / "tracking").rglob("events.out.tfevents*")).parent))
    ev.Reload()
    offset = sum(s.steps for s in recipe.stages[:3])
    logged = {e.step - offset for e in ev.Scalars("loss_ie") if e.step > offset}
    assert logged == {r["step"] for r in rows if "loss_ie" in r}


def test_plot_and_runs_show_skip_the_absent_term(text_only_run, capsys):
    out, _, stages = text_only_run
    rows = [r for r in read_metrics(out / "stage-3-finetune_ie") if "loss" in r]
    lines = {label: pts for label, pts, _, _ in _series([out], "stage-3-finetune_ie")}
    assert lines["loss_ie"] == [(r["step"], r["loss_ie"]) for r in rows if "loss_ie" in r]  # no point at 0
    assert len(lines["loss_base"]) == 6

    final = json.loads((out / "stage-3-finetune_ie" / "stage.json").read_text())["final"]
    assert final == {k: v for k, v in rows[-1].items() if k.startswith("loss")} == stages[3]["final"]
    assert main(["runs", "show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["stages"][3]["final"]
    latest_ie = [r for r in rows if "loss_ie" in r][-1]["loss_ie"]
    assert shown == {**final, "loss_ie": latest_ie}  # each term's latest value, also after a text-only last step
    assert main(["runs", "show", str(out)]) == 0
    assert f"ie={latest_ie:.4g}" in capsys.readouterr().out
