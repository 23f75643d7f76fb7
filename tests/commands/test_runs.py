"""`eim runs show` (eim.commands.runs, eim.training.run_summary, eim.plot) on a run killed in its
second stage: a finished stage, a checkpointed one and one not started."""

import json

import pytest
from helpers import Interrupt, interrupt_at, steps, tiny_recipe

from eim.api import train
from eim.cli import main
from eim.data.loader import load_dataset
from eim.training.progress import read_metrics


@pytest.fixture(scope="module")
def killed_run(tiny_dir, shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    coco = load_dataset(shapes / "coco", "coco", split="train")
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides={**steps("e", 4, 3), "train.save_every": 2,
                                                             "train.eval_every": 2, "train.eval_samples": 4,
                                                             "train.eval_banks": True})
    with pytest.raises(Interrupt):
        train(recipe, coco, out, quiet=True, callbacks=[interrupt_at(1, 3)])
    return out, recipe


def test_show_table_json_and_plot(killed_run, tmp_path, capsys):
    out, recipe = killed_run
    assert main(["runs", "show", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["recipe"] == recipe.name
    s0, s1, s2 = summary["stages"]
    assert [s["state"] for s in (s0, s1, s2)] == ["finished", "checkpointed", "not started"]
    assert [s["name"] for s in (s0, s1, s2)] == [s.name for s in recipe.stages]
    assert s0["steps"] == s0["total"] == 4 and s0["weights"].endswith("stage-0-st/model.safetensors")
    assert s1["steps"] == 3 and s1["checkpoint_step"] == 2 and s1["weights"].endswith(".partial/checkpoint")
    rows = [r for r in read_metrics(out / f"stage-0-{recipe.stages[0].name}") if "val_loss_st" in r]
    best = min(rows, key=lambda r: r["val_loss_st"])
    assert s0["validation"]["val_loss_st"] == {"last": rows[-1]["val_loss_st"], "best": best["val_loss_st"],
                                               "best_step": best["step"]}

    assert main(["runs", "show", str(out), "--plot", str(tmp_path / "curves.html")]) == 0
    table = capsys.readouterr().out
    assert "finished" in table and "checkpointed" in table and "not started" in table and "(step 2)" in table
    page = (tmp_path / "curves.html").read_text()
    assert "data:image/png;base64," in page and "stage-0-st" in page


def test_show_refuses_a_folder_without_a_run(tmp_path, capsys):
    assert main(["runs", "show", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["runs", "show", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
