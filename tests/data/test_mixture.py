"""A mixture of datasets (LaVIN's LLaVA + Alpaca chatbot data): interleaving, bank rows, fingerprint, --data."""

import argparse
import json

import pytest

from eim.banks import dataset_fingerprint
from eim.data import add_data_args, load_dataset
from eim.data.loader import datasets_from_args
from eim.data.mixture import Mixture
from eim.errors import DataError


def _llava(path, n):
    path.write_text(json.dumps([{"id": f"c{i}", "conversations": [
        {"from": "human", "value": f"Q{i}?"}, {"from": "gpt", "value": f"A{i}."}]} for i in range(n)]))
    return path


def _alpaca(path, n):
    path.write_text(json.dumps([{"instruction": f"Do {i}.", "input": "", "output": f"Done {i}."} for i in range(n)]))
    return path


@pytest.fixture
def files(tmp_path):
    return _llava(tmp_path / "conv.json", 6), _alpaca(tmp_path / "alpaca_data.json", 3)


def test_interleaves_in_proportion_and_renumbers(files):
    llava, alpaca = (load_dataset(f) for f in files)
    mix = Mixture([llava, alpaca])
    assert len(mix) == 9
    rows = [(s.response, s.index) for s in mix]
    assert [i for _, i in rows] == list(range(9))  # bank row i is sample i
    # every part keeps its own order; any prefix holds both parts in their shares (6:3)
    assert [r for r, _ in rows if r.startswith("A")] == [f"A{i}." for i in range(6)]
    assert [r for r, _ in rows if r.startswith("Done")] == [f"Done {i}." for i in range(3)]
    for k in (3, 6, 9):
        assert sum(r.startswith("Done") for r, _ in rows[:k]) == k // 3
    assert mix[-1].response == rows[-1][0] and mix[0].image is None
    with pytest.raises(IndexError):
        mix[9]
    assert mix.files == llava.files + alpaca.files and mix.mode == "train"


def test_fingerprint_follows_parts_and_their_order(files, tmp_path):
    llava, alpaca = (load_dataset(f) for f in files)
    a, b = dataset_fingerprint(Mixture([llava, alpaca])), dataset_fingerprint(Mixture([alpaca, llava]))
    assert a != b and a["records"] == b["records"] == 9
    assert [p["format"] for p in a["parts"]] == ["llava", "alpaca"]
    _alpaca(files[1], 4)  # a part's file changes: so does the mixture's fingerprint
    assert dataset_fingerprint(Mixture([llava, load_dataset(files[1])])) != a


def test_modes_must_agree_and_empty_is_an_error(files):
    with pytest.raises(DataError, match="different modes"):
        Mixture([load_dataset(files[0], mode="train"), load_dataset(files[1], mode="eval")])
    with pytest.raises(DataError, match="at least one"):
        Mixture([])


def _args(*data):
    parser = add_data_args(argparse.ArgumentParser(), named=True)
    return parser.parse_args([x for d in data for x in ("--data", str(d))])


def test_a_repeated_data_name_is_a_mixture(files, tmp_path):
    one = datasets_from_args(_args(files[0]))["main"]
    assert one.format == "llava" and len(one) == 6
    mix = datasets_from_args(_args(*files))["main"]  # plain paths twice: the main dataset is their mixture
    assert isinstance(mix, Mixture) and len(mix) == 9
    coco_like = _llava(tmp_path / "captions.json", 2)
    named = datasets_from_args(_args(f"captions={coco_like}", f"instruct={files[0]}", f"instruct={files[1]}"))
    assert set(named) == {"captions", "instruct"} and len(named["instruct"]) == 9 and len(named["captions"]) == 2
