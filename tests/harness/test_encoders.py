"""The demo's encoder cache: reuse, rebuild, interrupted builds (eim_harness.encoders)."""

import json
import time

import pytest
from transformers import AutoTokenizer

import eim_harness.encoders
from eim_harness.encoders import cached_encoders

# Small enough for seconds on 2 CPU cores; large enough that the losses clearly fall.
CLIP = dict(width=32, layers=1, heads=2, text_width=32, text_layers=1, projection_dim=32, batch_size=16, lr=3e-3)
LM = dict(width=32, layers=1, heads=2, context=32, max_positions=64, batch_size=8, lr=3e-3)
TINY = {"vocab_size": 300, "clip": dict(CLIP, steps=4), "lm": dict(LM, steps=4)}


def test_cached_encoders_reuse_and_rebuild(shapes, tmp_path):
    cache = tmp_path / "cache"
    first = cached_encoders(shapes, cache, overrides=TINY, quiet=True)
    assert not first["reused"] and first["clip"] == cache / "tiny" / "clip"
    # each encoder has the tokenizer layout of its published model (issue 13: CLIP's own encoding)
    ctok, ltok = AutoTokenizer.from_pretrained(first["clip"]), AutoTokenizer.from_pretrained(first["lm"])
    assert type(ctok).__name__ == "CLIPTokenizer" and ctok("a red circle").input_ids[0] == ctok.bos_token_id
    assert ctok("a red circle").input_ids[-1] == ctok.eos_token_id == max(ctok.get_vocab().values())
    assert ltok("a red circle").input_ids == ltok("a red circle", add_special_tokens=False).input_ids  # GPT-2: none
    t = time.perf_counter()
    second = cached_encoders(shapes, cache, overrides=TINY, quiet=True)
    assert second["reused"] and second["lm"] == first["lm"] and time.perf_counter() - t < 5
    changed = {**TINY, "lm": dict(LM, steps=5)}
    third = cached_encoders(shapes, cache, overrides=changed, quiet=True)
    assert not third["reused"]
    assert json.loads((third["lm"] / "pretrain.json").read_text())["settings"]["steps"] == 5
    assert sorted(p.name for p in cache.iterdir()) == ["tiny"]  # no temporary folder left


def test_interrupted_pretraining_leaves_no_cache(shapes, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(eim_harness.encoders, "pretrain_lm", boom)
    with pytest.raises(KeyboardInterrupt):
        cached_encoders(shapes, tmp_path, overrides=TINY, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_unknown_setting_and_preset_are_clear_errors(shapes, tmp_path):
    from eim.errors import EIMError

    with pytest.raises(EIMError, match="unknown encoder preset"):
        cached_encoders(shapes, tmp_path, preset="huge")
    with pytest.raises(EIMError, match="unknown encoder setting"):
        cached_encoders(shapes, tmp_path, overrides={"vocab": 3})


def test_a_conversations_pretraining_texts_are_each_turn_after_its_history():
    """The LM pretrains on each turn of a conversation written after its earlier turns, as the texts
    every cached encoder was pretrained on were written: the loader's one sample per conversation
    changes no encoder."""
    from eim.data.sample import Sample
    from eim_harness.encoders import sample_texts

    s = Sample(0, None, "What is it?", "A red circle.", turns=[("What is it?", "A red circle."), ("Is it big?", "No.")])
    assert sample_texts(s) == ["What is it? A red circle.",
                               "Human: What is it?\nAssistant: A red circle.\nIs it big? No."]
    assert sample_texts(Sample(0, None, "", "a red circle.")) == ["a red circle."]
