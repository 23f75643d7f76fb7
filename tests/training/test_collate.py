"""Batches of the ``raw`` template (ClipCap, LaVIN, LLaMA-Adapter) stay what they were: the collated
ids, labels, lead and lengths of COCO and ScienceQA samples equal those recorded before conversation
templates existed (``raw_batches.json``), for a GPT-2 and a LLaMA tokenizer, in the train, prompt
and text modes."""

import json
from pathlib import Path

from helpers import TEXTS
from transformers import AutoTokenizer

from eim.data import load_dataset
from eim.model.splice import TextEncoder
from eim.model.vision import load_image_processor
from eim.training.collate import Collator
from eim_harness.tiny import make_tokenizer

GOLDEN = Path(__file__).parent / "raw_batches.json"
KEYS = ("input_ids", "labels", "n_lead", "text_lengths", "has_image")


def batches(tiny_dir, shapes):
    proc = load_image_processor(tiny_dir / "clip")
    data = {"coco": load_dataset(shapes / "coco", split="train"),
            "scienceqa": load_dataset(shapes / "scienceqa", split="train")}
    out = {}
    toks = {lm: AutoTokenizer.from_pretrained(tiny_dir / lm) for lm in ("gpt2", "llama")}
    toks["bos"] = make_tokenizer(TEXTS, vocab_size=300, llama_specials=True)  # LLaMA's <s> lead
    for lm, tok in toks.items():
        for name, ds in data.items():
            samples = [ds[i] for i in range(8)]
            for mode in ("train", "prompt", "text"):
                b = Collator(TextEncoder(tok, 48), proc, mode=mode)(samples)
                out[f"{lm}/{name}/{mode}"] = {k: b[k].tolist() for k in KEYS}
    return out


def test_raw_batches_are_unchanged(tiny_dir, shapes):
    assert batches(tiny_dir, shapes) == json.loads(GOLDEN.read_text())  # recorded before templates existed


def test_pad_is_a_square_in_the_processors_mean_colour(tiny_dir, tmp_path):
    """``image_aspect_ratio: pad`` pads to a square in the image processor's mean colour, centred (LLaVA's
    expand2square, written here by hand with PIL), before the processor's resize; ``crop`` does not."""
    import torch
    from PIL import Image

    from eim.training.collate import pixel_values

    proc = load_image_processor(tiny_dir / "clip")
    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 26), (10, 200, 30)).save(path)
    fill = tuple(int(x * 255) for x in proc.image_mean)
    by_hand = Image.new("RGB", (40, 40), fill)
    by_hand.paste(Image.open(path).convert("RGB"), (0, 7))
    want = proc(images=[by_hand], return_tensors="pt")["pixel_values"]
    assert torch.equal(pixel_values(proc, [str(path)], "pad"), want)
    assert not torch.equal(pixel_values(proc, [str(path)], "crop"), want)
