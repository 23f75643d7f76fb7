"""Shared fixtures: tiny real-architecture models saved with save_pretrained, tiny image sets.
Helper functions are in ``helpers.py``."""

import pytest
import torch
from helpers import TEXTS, ListDataset, caption_samples, tiny_recipe

import eim  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
from eim.cli import main
from eim.model.multimodal import build_model
from eim_harness.tiny import make_clip_tokenizer, make_tiny_clip, make_tiny_lm, make_tokenizer
from eim.model.vision import load_image_processor


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A folder holding `clip/` (a tiny CLIPModel with a CLIP-layout tokenizer and the published
    configs' legacy ``eos_token_id = 2``), `gpt2/`, `gpt2_left/` and `llama/` (tiny LMs) + tokenizers."""
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_clip(root / "clip", make_clip_tokenizer(TEXTS, vocab_size=300))  # the published CLIP layout
    tok = make_tokenizer(TEXTS, vocab_size=300)
    make_tiny_lm(root / "gpt2", tok, arch="gpt2")
    tok_left = make_tokenizer(TEXTS, vocab_size=300, padding_side="left")
    make_tiny_lm(root / "gpt2_left", tok_left, arch="gpt2")
    make_tiny_lm(root / "llama", tok, arch="llama")
    return root


@pytest.fixture(scope="module")
def clipcap(tiny_dir):
    """The tiny ClipCap model (eval mode), its tokenizer and image processor."""
    torch.manual_seed(0)
    model, tok = build_model(tiny_recipe(tiny_dir))
    model.eval()
    return model, tok, load_image_processor(tiny_dir / "clip")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 images with 2 captions each, as a dataset the trainer and the banks take."""
    root = tmp_path_factory.mktemp("imgs")
    ds = ListDataset(caption_samples(root, 8, captions_per_image=2))
    ds.files, ds.format, ds.split = [], "list", "train"
    return ds


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A small generated shapes world (40 train images) in every format."""
    out = tmp_path_factory.mktemp("shapes")
    assert main(["data", "shapes", "--out", str(out), "--train", "40", "--val", "8", "--test", "8"]) == 0
    return out
