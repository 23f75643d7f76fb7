"""Vicuna's and LLaMA's own files (docs/design.md §7): lmsys/vicuna-7b-v1.5 ships a SentencePiece
``tokenizer.model`` without ``tokenizer.json``, the configs of transformers' slow ``LlamaTokenizer``
(``"legacy": false``) and sharded ``.bin`` weights. A folder in that layout
(:func:`eim_harness.tiny.make_vicuna_lm`: a SentencePiece model trained offline with LLaMA's options,
a tiny LLaMA of its vocabulary) is read correctly (:func:`eim.model.lm.load_tokenizer` gives
SentencePiece's own ids, BOS leads, ``</s>`` is EOS; :func:`eim.model.lm.build_lm` the saved
weights), and ``eim data tokens`` and ``eim train llava`` run on it as the README runs them. Where
``sentencepiece`` is missing, the error names it.

A text that starts with a space is the one place transformers' conversion differs from
SentencePiece (one dummy-prefix ``▁`` fewer): tests/model/test_llava_records.py pins it."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import TEXTS, write_llava_world
from llava_reference import llava_positions

from eim.cli import main
from eim.model.lm import build_lm, load_tokenizer
from eim.model.splice import TextEncoder
from eim.training.checkpoint import run_weights
from eim_harness.tiny import make_vicuna_lm

WORDS = ["What is shown here? Render a short caption. What colour is it? It is red.",
         "A chat between a curious user and an artificial intelligence assistant. USER: ASSISTANT:"]
STRINGS = ["a red circle that is on white one .", "What is shown here?\nIt is red.",
           "USER: What colour is it? ASSISTANT: It is blue", "digits 2024 and 3.14", "café naïve ☃ 東京",
           "two  spaces\tand a tab\n\n"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """LLaVA-1.5's two files with images and a tiny CLIP (tests/helpers.py), and ``vicuna/``: a tiny
    LLaMA in Vicuna's layout."""
    w = write_llava_world(tmp_path_factory.mktemp("vicuna"), width=32)
    w["vicuna"] = make_vicuna_lm(w["root"] / "vicuna", (TEXTS + WORDS) * 4)
    return w


def _lm(path, **kw):
    return SimpleNamespace(name_or_path=str(path), trust_remote_code=False, gguf_file=None, **kw)


def test_vicuna_s_files_read_as_sentencepiece_reads_them(world):
    import sentencepiece as spm

    folder = world["vicuna"]
    assert not (folder / "tokenizer.json").exists() and not list(folder.glob("*.safetensors"))
    assert json.loads((folder / "tokenizer_config.json").read_text())["legacy"] is False  # as Vicuna ships it
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = load_tokenizer(_lm(folder))
    assert len(tok) == sp.get_piece_size() == json.loads((folder / "config.json").read_text())["vocab_size"]
    for s in STRINGS:
        assert tok(s).input_ids == [sp.bos_id()] + sp.encode(s), s
        assert tok.decode(tok(s).input_ids, skip_special_tokens=True) == s
    assert sp.id_to_piece(13) == "<0x0A>" and tok("\n", add_special_tokens=False).input_ids[-1] == 13  # LLaMA's bytes
    assert (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id) == ("<s>", sp.bos_id(), "</s>", sp.eos_id())
    assert (tok.pad_token, tok.pad_token_id) == ("<unk>", sp.unk_id()) == ("<unk>", 0)  # Vicuna's map, as LLaVA pads
    assert tok("It is red.</s>").input_ids[-1] == sp.eos_id()  # the templates write </s> as text
    enc = TextEncoder(tok, 64, template="vicuna_v1")
    assert enc.lead == [sp.bos_id()] and enc.eos == sp.eos_id()
    # the sharded .bin weights, as transformers reads them (weights_only), are what was saved
    model, _ = build_lm(_lm(folder, dtype="float32", attn_implementation=None, trainable="frozen"))
    saved = {}
    for f in sorted(folder.glob("pytorch_model-*.bin")):
        saved.update(torch.load(f, weights_only=True))
    got = model.state_dict()
    assert saved.keys() == got.keys()
    assert all(torch.equal(got[k], v.float()) for k, v in saved.items())


def test_eim_data_tokens_and_train_llava_run_on_vicuna_s_layout(world, tmp_path, capsys):
    """``eim data tokens`` gives LLaVA-1.5's preprocessing of a record (tests/llava_reference.py) in
    both stages, with Vicuna's system line; ``eim train llava`` (the recipe's bf16 and
    checkpointing) runs two steps a stage on image and text-only conversations."""
    data = ["--data", f"captions={world['captions']}", "--data", f"instruct={world['instruct']}",
            "--image-root", str(world["images"]), "--vision.name_or_path", str(world["clip"]),
            "--lm.name_or_path", str(world["vicuna"])]
    records = json.loads(world["instruct"].read_text())
    tok = load_tokenizer(_lm(world["vicuna"]))
    shown = {}
    for index, stage, template, record in (
            (0, "pretrain", "plain", json.loads(world["captions"].read_text())[0]),
            *((i, "finetune", "vicuna_v1", records[i]) for i in (0, 1, len(records) - 1))):
        assert main(["data", "tokens", "llava", *data, "--index", str(index), "--stage", stage, "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        ids, labels, blanked = llava_positions(tok, record, template, 2048, 1)
        assert got["input_ids"] == ids, (stage, record["id"])
        assert blanked or got["labels"] == labels, (stage, record["id"])  # (LLaVA's mismatch check aside)
        assert ids[0] == tok.bos_token_id and ids.count(-200) == ("image" in record)
        # the targets: every answer (and under vicuna_v1 its </s>), nothing else
        targets = [i for i, lab in zip(ids, got["labels"]) if lab != -100]
        answers = [t["value"] for t in record["conversations"][1::2]]
        if template == "vicuna_v1":
            assert targets.count(tok.eos_token_id) == len(answers) == ids.count(tok.eos_token_id)
            said = tok.decode(targets).split("</s>")[:-1]
        else:
            said = [tok.decode(targets)]
        assert [a.strip() for a in said] == [a.strip() for a in answers], (stage, record["id"])
        shown["image" in record] = True
    assert shown == {True: True, False: True}  # an image record and a text-only one
    out = tmp_path / "run"
    sized = [a for k in (0, 1) for a in (f"--stages.{k}.epochs", "none", f"--stages.{k}.steps", "2",
                                          f"--stages.{k}.batch_size", "4")]
    assert main(["train", "llava", *data, "--out", str(out), *sized, "--train.log_every", "1",
                 "--generation.max_new_tokens", "4", "--quiet"]) == 0
    rows = [json.loads(line) for s in ("stage-0-pretrain", "stage-1-finetune")
            for line in (out / s / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert any(n.startswith("lm.") for n in run_weights(out))  # finetune trained the LLM


def test_a_missing_sentencepiece_is_named_with_the_fix(world):
    """Without ``sentencepiece`` transformers stops with "`tiktoken` is required"; eim names the
    package to install instead (a child process in which the package cannot be found)."""
    code = f"""
import importlib.util, sys
find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] == "sentencepiece" else find(name, *a, **k)
sys.modules["sentencepiece"] = None
from types import SimpleNamespace
from eim.errors import ConfigError
from eim.model.lm import load_tokenizer
try:
    load_tokenizer(SimpleNamespace(name_or_path={str(world["vicuna"])!r}, trust_remote_code=False, gguf_file=None))
except ConfigError as e:
    print("ConfigError:", e)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"ConfigError: cannot read the tokenizer of lm.name_or_path {world['vicuna']}: " in res.stdout
    assert "needs the sentencepiece package, which this environment lacks: pip install sentencepiece" in res.stdout
