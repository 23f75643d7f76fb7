"""Format detection from each kind of path, and the shared --data flags."""

import argparse
import json

import pytest
from format_files import CAPTIONS, coco_record, write_coco, write_mme, write_sqa

from eim.data import add_data_args, dataset_from_args, detect_format, load_dataset
from eim.errors import DataError


@pytest.fixture
def paths(tmp_path):
    coco = write_coco(tmp_path / "coco", [coco_record(391895, 0, "COCO_val2014_000000391895.jpg",
                                                      "train", CAPTIONS)])
    sqa = write_sqa(tmp_path / "sqa")
    (tmp_path / "llava").mkdir()
    llava = tmp_path / "llava" / "conv.json"
    llava.write_text(json.dumps([{"id": "1", "conversations": [
        {"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]}]))
    (tmp_path / "alpaca").mkdir()
    alpaca = tmp_path / "alpaca" / "alpaca_data.json"
    alpaca.write_text(json.dumps([{"instruction": "Do.", "input": "", "output": "Done."}]))
    mme = write_mme(tmp_path / "MME")
    return {"coco": coco, "sqa": sqa, "llava": llava, "alpaca": alpaca, "mme": mme,
            "root": tmp_path}


def test_detects_each_kind_of_path(paths):
    assert detect_format(paths["coco"]) == "coco"  # the file
    assert detect_format(paths["coco"].parent) == "coco"  # the folder holding it
    assert detect_format(paths["sqa"]) == "scienceqa"
    assert detect_format(paths["sqa"] / "problems.json") == "scienceqa"
    assert detect_format(paths["sqa"] / "pid_splits.json") == "scienceqa"
    assert detect_format(paths["llava"]) == "llava"
    assert detect_format(paths["llava"].parent) == "llava"  # a folder holding one JSON
    assert detect_format(paths["alpaca"]) == "alpaca"
    assert detect_format(paths["mme"]) == "mme"


def test_renamed_karpathy_file_and_explicit_format(paths, tmp_path):
    renamed = tmp_path / "captions.json"
    renamed.write_text(paths["coco"].read_text())
    assert detect_format(renamed) == "coco"
    ds = load_dataset(renamed, data_format="coco", image_root=paths["coco"].parent)
    assert len(ds) == 5


def test_unrecognised_path_is_a_clear_error(tmp_path, paths):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(DataError) as e:
        load_dataset(junk)
    assert str(e.value) == (
        f"{junk}: cannot tell the data format (expected dataset_coco.json, a ScienceQA folder "
        "with problems.json, LLaVA, messages or Alpaca records (JSON or JSON Lines), or an MME folder). "
        "pass --data-format with one of: coco, scienceqa, llava, messages, alpaca, mme")
    with pytest.raises(DataError, match="no such file or folder. check the --data path"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="unknown data format 'parquet'"):
        load_dataset(junk, data_format="parquet")
    with pytest.raises(DataError) as e:  # a folder of datasets, like `eim data shapes` writes
        detect_format(paths["root"])
    assert str(e.value) == (
        f"{paths['root']}: this folder holds several datasets: MME/ (mme), alpaca/ (alpaca), "
        "coco/ (coco), llava/ (llava), sqa/ (scienceqa). point --data at one of them")


def test_shared_flags(paths):
    parser = add_data_args(argparse.ArgumentParser())
    args = parser.parse_args(["--data", str(paths["sqa"]), "--split", "test", "--skip-bad"])
    ds = dataset_from_args(args, mode="eval")
    assert (ds.format, ds.split, ds.mode, len(ds)) == ("scienceqa", "test", "eval", 1)
    args = parser.parse_args(["--data", str(paths["coco"]), "--data-format", "coco",
                              "--image-root", str(paths["coco"].parent)])
    assert len(dataset_from_args(args)) == 5
    assert len(dataset_from_args(args, mode="eval")) == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "x", "--data-format", "csv"])


def test_dataset_protocol(paths):
    ds = load_dataset(paths["coco"])
    assert ds[-1].index == 4 and [s.index for s in ds] == list(range(5))
    with pytest.raises(IndexError):
        ds[5]
    assert "samples=5" in repr(ds)
    import torch.utils.data as tud  # map-style: a DataLoader can batch it

    loader = tud.DataLoader(ds, batch_size=2, collate_fn=list)
    assert [len(b) for b in loader] == [2, 2, 1]
