"""`eim data check` and `eim data tokens` (eim.commands.data)."""

import json

import pytest
from format_files import CAPTIONS, coco_record, truncate, write_coco, write_mme

from eim.cli import main


def test_check_decodes_every_image_and_lists_what_skip_bad_skips(tmp_path, capsys):
    recs = [coco_record(1, 0, "a.jpg", "test", CAPTIONS), coco_record(2, 1, "b.jpg", "test", ["A cake."]),
            coco_record(3, 2, "c.jpg", "train", ["A dog."])]
    path = write_coco(tmp_path / "coco", recs)
    assert main(["data", "check", "--data", str(path), "--split", "test"]) == 0
    out, err = capsys.readouterr()
    assert "coco test: 6 samples, 0 bad records\n" in out and "decode images" in err  # a progress bar
    img = truncate(tmp_path / "coco" / "val2014" / "a.jpg")
    for extra in ([], ["--skip-bad"]):  # lists every bad record either way
        assert main(["data", "check", "--data", str(path), "--split", "test", *extra]) == 1
        out = capsys.readouterr().out
        assert out.startswith("coco test: 1 sample, 1 bad record (pass --skip-bad to train or evaluate without them)\n")
        assert f"  1: cannot decode image {img} (OSError: " in out
    assert main(["data", "check", "--data", str(path), "--split", "test", "--mode", "eval"]) == 1
    assert "coco test: 1 sample, 1 bad record" in capsys.readouterr().out


def test_check_names_mme_split_test(tmp_path, capsys):
    root = write_mme(tmp_path / "mme")
    assert main(["data", "check", "--data", str(root)]) == 0  # --split defaults to train
    assert "mme test: 4 samples, 0 bad records\n" in capsys.readouterr().out


@pytest.mark.parametrize("stage, template, data", [("finetune", "vicuna_v1", "instruct"), ("pretrain", "plain", "captions")])
def test_tokens_prints_what_the_trainer_feeds_as_llava_does(tiny_dir, shapes, tmp_path, capsys, stage, template, data):
    """``eim data tokens`` prints a sample of a stage's dataset as LLaVA-1.5's preprocessing gives its
    record (tests/llava_reference.py): the image as -200, -100 wherever the position is not a target,
    and the positions the LLM sees (the tiny CLIP's 16 patches for the image); ``train.max_length``
    counts them, as LLaVA's ``model_max_length`` does."""
    from helpers import TEXTS
    from llava_reference import expand, llava_positions
    from transformers import AutoTokenizer

    from eim.data import load_dataset
    from eim_harness.tiny import make_tiny_lm, make_tokenizer

    lm = make_tiny_lm(tmp_path / "llama", make_tokenizer(TEXTS, 300, llama_specials=True), arch="llama")
    paths = {"captions": shapes / "coco", "instruct": shapes / "llava" / "instruct.json"}
    args = ["data", "tokens", "llava", "--data", f"captions={paths['captions']}", "--data",
            f"instruct={paths['instruct']}", "--index", "3", "--stage", stage, "--vision.name_or_path",
            str(tiny_dir / "clip"), "--lm.name_or_path", str(lm), "--data.system", "A chat."]
    assert main(args + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    if data == "instruct":  # the record itself
        record = json.loads(paths["instruct"].read_text())[3]
    else:  # a caption as LLaVA's stage-1 data holds it
        record = {"image": "x.jpg", "conversations": [{"from": "human", "value": "<image>"},
                                                      {"from": "gpt", "value": load_dataset(paths[data])[3].response}]}
    tok, P = AutoTokenizer.from_pretrained(lm), 16  # the tiny CLIP: 32 px in 8 px patches, no [CLS]
    ids, labels, _ = llava_positions(tok, record, template, 2048, 1, system="A chat.")
    assert (got["input_ids"], got["labels"]) == (ids, labels) and got["input_ids"].count(-200) == 1
    assert got["positions"] == len(ids) - 1 + P
    assert "<image>" in got["text"] and got["text"].startswith("<s>")
    L = got["positions"] - 3  # three positions short: the text loses three tokens, the image none
    assert main(args + ["--train.max_length", str(L), "--json"]) == 0
    cut = json.loads(capsys.readouterr().out)
    assert cut["positions"] == L and expand(cut["input_ids"], cut["labels"], P) == \
        llava_positions(tok, record, template, L, P, system="A chat.")[:2]
    assert main(args) == 0  # the readable form: the template, the text, the positions, the targets in brackets
    out = capsys.readouterr().out
    assert f"stage {stage} ({template} template), sample 3 of" in out
    assert f"\n{len(ids) - 1 + P} positions ({P} of them the image's), " in out
    assert ("[</s>]" in out) == (template == "vicuna_v1")  # vicuna_v1's answers end with </s>; plain's with \n
    assert main(args[:9] + ["--index", "100000"] + args[11:]) == 2
    assert "--index 100000 is outside the stage's dataset" in capsys.readouterr().err
