"""Shared fixtures: tiny real-architecture models saved with save_pretrained, tiny image sets."""

import random
from pathlib import Path

import eim  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
import pytest
import torch
from PIL import Image, ImageDraw

from eim.config import load_recipe
from eim.data.sample import Sample
from eim.model.tiny import make_tiny_clip, make_tiny_lm, make_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
SHAPES = ("circle", "square")


class ListDataset(torch.utils.data.Dataset):
    """A dataset over a list of Samples (the loaders' shape), for model/trainer tests."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def draw(path, colour, shape, size=32):
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    box = (6, 6, size - 6, size - 6)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    im.save(path)
    return str(path)


def caption_samples(root, n_images=8, captions_per_image=1, seed=0):
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for i in range(n_images):
        c, s = combos[i % len(combos)]
        p = draw(root / f"img{i}.png", c, s)
        for j in range(captions_per_image):
            cap = rng.choice([f"a {c} {s}.", f"a {s} that is {c}.", f"one {c} {s} on white."])
            samples.append(Sample(index=len(samples), image=p, instruction="", response=cap, image_id=i,
                                  meta={"image_key": i}))
    return samples


TEXTS = [f"a {c} {s} that is on white one ." for c in COLOURS for s in SHAPES] * 5


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A folder holding `clip/` (tiny CLIPModel), `gpt2/` and `llama/` (tiny LMs) + tokenizers."""
    root = tmp_path_factory.mktemp("tiny")
    tok = make_tokenizer(TEXTS, vocab_size=300)
    make_tiny_clip(root / "clip", tok)
    make_tiny_lm(root / "gpt2", tok, arch="gpt2")
    tok_left = make_tokenizer(TEXTS, vocab_size=300, padding_side="left")
    make_tiny_lm(root / "gpt2_left", tok_left, arch="gpt2")
    make_tiny_lm(root / "llama", tok, arch="llama")
    return root


def tiny_recipe(tiny_dir, name="clipcap", lm="gpt2", overrides=None):
    """A shipped recipe pointed at the tiny models, with small sizes."""
    base = {
        "vision.name_or_path": str(tiny_dir / "clip"),
        "lm.name_or_path": str(tiny_dir / lm),
        "train.batch_size": 4,
        "train.warmup_steps": 0,
        "train.lr": 1e-3,
        "train.log_every": 1,
        "generation.num_beams": 1,
        "generation.max_new_tokens": 8,
    }
    if name == "clipcap":
        base["projector.prefix_length"] = 2
    base.update(overrides or {})
    return load_recipe(name, base)
