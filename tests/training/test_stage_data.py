"""A stage's own dataset (``stages.<k>.data``): each stage trains on, and builds its banks from, its data."""

import json

import pytest
from helpers import llava_datasets, tiny_recipe

from eim.api import train
from eim.cli import main
from eim.errors import DataError
from eim.io import load_tensors
from eim.training.stage import resolve_datasets


def _recipe(tiny_dir, **over):
    """llava_eim at tiny size: st (captions) -> lm (instruct) -> pretrain (captions) -> finetune_ie (instruct)."""
    return tiny_recipe(tiny_dir, "llava_eim", lm="llama",
                       overrides={"train.max_length": 32, "train.batch_size": 4, "stages.1.lr_scale": 1.0, **over})


def test_each_stage_reads_its_dataset_and_its_banks(tiny_dir, tmp_path):
    data = llava_datasets(tmp_path / "images", question="What is it?")
    data["instruct"].samples = data["instruct"].samples[:12]  # a different size: 16 captions, 12 instructions
    recipe = _recipe(tiny_dir)  # every stage 1 epoch: ceil(16 / 4) = 4 and ceil(12 / 4) = 3 steps
    stages = train(recipe, None, tmp_path / "run", datasets=data, quiet=True)
    assert [(s["name"], s["steps"]) for s in stages] == [("st", 4), ("lm", 3), ("pretrain", 4), ("finetune_ie", 3)]
    banks = tmp_path / "run" / "banks"
    rows = {p.parent.name + "/" + p.stem: load_tensors(p)[0]["bank"].shape[0] for p in banks.glob("*/*.safetensors")}
    assert rows == {"captions/embed": 16, "instruct/lm": 12, "instruct/text": 12}  # row i = that dataset's sample i
    fp = json.loads((banks / "instruct" / "lm.json").read_text())
    assert fp["data"]["records"] == 12
    ident = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(ident["data"]["datasets"]) == {"captions", "instruct"}
    # a resumed run reuses every stage; other data for one stage is a different run
    assert [s["steps"] for s in train(recipe, None, tmp_path / "run", datasets=data, quiet=True, resume=True)] == [4, 3, 4, 3]
    data["instruct"].samples = data["instruct"].samples[:8]
    with pytest.raises(Exception, match="data 'instruct': records differ"):
        train(recipe, None, tmp_path / "run", datasets=data, quiet=True, resume=True)


def test_missing_or_unused_datasets_are_named(tiny_dir, tmp_path):
    recipe = _recipe(tiny_dir)
    data = llava_datasets(tmp_path / "images")
    with pytest.raises(DataError, match=r"stage 'lm' trains on 'instruct'.*pass --data instruct=PATH"):
        resolve_datasets(recipe, {"captions": data["captions"]})
    with pytest.raises(DataError, match="no stage trains on 'extra'"):
        resolve_datasets(recipe, {**data, "extra": data["captions"]})
    with pytest.raises(DataError, match="pass --data captions=PATH --data instruct=PATH"):
        resolve_datasets(recipe, {"main": data["captions"]})  # one plain dataset: the stages name theirs
    assert resolve_datasets(tiny_recipe(tiny_dir), {"main": data["captions"]}) == {"main": data["captions"]}


def test_train_command_takes_named_data(tiny_dir, shapes, tmp_path, capsys):
    args = ["train", "llava", "--out", str(tmp_path / "run"), "--quiet", "--data", f"captions={shapes}/coco",
            "--vision.name_or_path", str(tiny_dir / "clip"), "--lm.name_or_path", str(tiny_dir / "llama"),
            "--stages.0.epochs", "none", "--stages.0.steps", "1", "--stages.1.epochs", "none", "--stages.1.steps", "1"]
    assert main(args) == 2
    assert "stage 'finetune' trains on 'instruct', which was not given" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert main(args + ["--data", f"instruct={shapes}/llava/instruct.json"]) == 0
    assert "stage 1 finetune: 1 steps" in capsys.readouterr().out
    assert main(["banks", "build", "llava_eim", "--out", str(tmp_path / "b"), "--quiet", "--data",
                 f"captions={shapes}/coco", "--data", f"instruct={shapes}/llava/instruct.json",
                 "--vision.name_or_path", str(tiny_dir / "clip"), "--lm.name_or_path", str(tiny_dir / "llama")]) == 0
    out = capsys.readouterr().out
    assert "b/banks/captions/embed.safetensors" in out and "b/banks/instruct/text.safetensors" in out
