"""Pretraining the demo's small CLIP and LM (eim_harness.pretrain)."""

import json
import math
from pathlib import Path

import pytest
import torch

from eim_harness.encoders import training_texts
from eim_harness.pretrain import pretrain_clip, pretrain_lm
from eim_harness.tokenizer import train_bpe_tokenizer

# Small enough for seconds on 2 CPU cores; large enough that the losses clearly fall.
CLIP = dict(width=32, layers=1, heads=2, text_width=32, text_layers=1, projection_dim=32, batch_size=16, lr=3e-3)


LM = dict(width=32, layers=1, heads=2, context=32, max_positions=64, batch_size=8, lr=3e-3)


@pytest.fixture(scope="module")
def clip_dir(shapes, tmp_path_factory):
    texts, _ = training_texts(shapes)
    out = tmp_path_factory.mktemp("clip")
    return pretrain_clip(shapes / "coco", out, steps=120, texts=texts, vocab_size=400, quiet=True, **CLIP)


def test_pretrained_clip_loads_and_learned(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    from eim.model.vision import load_image_processor

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    assert load_image_processor(clip_dir).crop_size["height"] == 64
    assert model.config.text_config.eos_token_id == tok.eos_token_id
    rep = json.loads((clip_dir / "pretrain.json").read_text())
    # below log(batch), where contrastive training from scratch first stalls (all embeddings alike)
    assert rep["loss_last"] < math.log(16) - 0.3 < rep["loss_first"], rep["loss_curve"]
    held = rep["retrieval_heldout"]
    assert held["split"] == "val" and held["images"] == 8 and held["captions"] == 40
    assert 0 <= held["i2t_r1"] <= 1 and held["i2t_chance"] == pytest.approx(5 / 40)
    assert rep["retrieval_train_batch"]["images"] == 40  # R@1 among the training images, too


def test_clip_pools_the_eos_state(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    from eim_harness.pretrain import _caption_ids, _text_batch

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    ids = _caption_ids(tok, ["A red circle.", "A tiny blue square in the top left corner."], 64)
    assert all(t[0] == tok.bos_token_id and t[-1] == tok.eos_token_id for t in ids) and len(ids[0]) < len(ids[1])
    assert ids == tok(["A red circle.", "A tiny blue square in the top left corner."]).input_ids  # its own encoding
    input_ids, mask = _text_batch(ids, tok.pad_token_id)  # right-padded with EOS (= pad)
    with torch.no_grad():
        out = model.text_model(input_ids=input_ids, attention_mask=mask)
    eos_pos = torch.tensor([len(t) - 1 for t in ids])
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(2), eos_pos])


def test_pretrain_lm_loss_falls(shapes, clip_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts, heldout = training_texts(shapes)
    assert any("Question:" in t for t in texts) and any("Options:" in t for t in heldout)  # ScienceQA too
    tok = train_bpe_tokenizer(texts, vocab_size=400)  # GPT-2's layout (CLIP's tokenizer is its own)
    out = pretrain_lm(texts, tok, tmp_path / "lm", steps=40, val_texts=heldout, quiet=True, **LM)
    rep = json.loads((out / "pretrain.json").read_text())
    assert rep["loss_last"] < rep["loss_first"] - 1.0, rep["loss_curve"]
    assert rep["val_loss"] is not None and rep["ppl_last"] > 1
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config.eos_token_id == tok.eos_token_id
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|endoftext|>"


def test_drills_teach_the_letter_and_supervise_only_the_response(shapes, tmp_path):
    """drill_lm fine-tunes in place on (instruction, response) pairs: the response loss falls and
    the instruction is never a target (a prompt-only change leaves the loss unchanged)."""
    from transformers import AutoModelForCausalLM

    from eim_harness.shapes.quizzes import quiz_pairs
    from eim_harness.pretrain import drill_lm
    from eim.model.splice import IGNORE, TextEncoder

    texts, _ = training_texts(shapes)
    pairs = quiz_pairs(64, scene_fraction=0.0)
    tok = train_bpe_tokenizer(texts + [i + " " + r for i, r in pairs], vocab_size=400)
    out = pretrain_lm(texts, tok, tmp_path / "lm", arch="llama", steps=5, quiet=True,
                      **{**LM, "context": 64, "max_positions": 160})
    before = (out / "model.safetensors").read_bytes()
    drill_lm(out, pairs, steps=40, batch_size=8, lr=3e-3, quiet=True)
    rep = json.loads((out / "pretrain.json").read_text())
    assert rep["kind"] == "lm" and rep["drills"]["problems"] == 64  # the pretraining record is kept
    assert rep["drills"]["loss_last"] < rep["drills"]["loss_first"] - 0.5, rep["drills"]
    assert (out / "model.safetensors").read_bytes() != before
    ids, labels, _ = TextEncoder(tok, max_length=512).encode(*pairs[0])  # what drill_lm trains on, untruncated
    n_prompt = next(k for k, x in enumerate(labels) if x != IGNORE)
    assert n_prompt == len(TextEncoder(tok).lead + tok(pairs[0][0], add_special_tokens=False).input_ids)
    assert IGNORE not in labels[n_prompt:] and labels[-1] == tok.eos_token_id
    with pytest.raises(Exception, match="at least one"):
        drill_lm(out, [], steps=1, quiet=True)
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__ == "LlamaForCausalLM"


def test_default_corpus_leaves_the_chat_mixture_out(shapes):
    """The chatbot mixture's files (generator version 4) reach the tiny LLM only when asked for,
    so the other tasks' encoders are those of a version-3 world."""
    from eim.data import load_dataset
    from eim_harness.encoders import CORPUS_FORMATS, _index_files

    base, _ = training_texts(shapes)
    assert not any("### Input:" in t for t in base)
    chat, _ = training_texts(shapes, CORPUS_FORMATS + ("alpaca",))
    assert len(chat) == len(base) + len(load_dataset(shapes / "alpaca"))
    files = [Path(f).relative_to(shapes).as_posix() for f in _index_files(shapes, CORPUS_FORMATS)]
    assert "llava/instruct.json" in files and not any(f.startswith(("vqa/", "alpaca/")) for f in files)


def test_yesno_drills_pose_every_subtask_in_words():
    from eim_harness.shapes.quizzes import yesno_pairs

    pairs = yesno_pairs(200)
    assert pairs == yesno_pairs(200) and pairs != yesno_pairs(200, seed="other")
    assert {a for _, a in pairs} == {"Yes", "No"} and 70 < sum(a == "Yes" for _, a in pairs) < 130
    lead, question = pairs[0][0].split("\n")
    assert lead.endswith(".") and question.endswith("Please answer yes or no.")
