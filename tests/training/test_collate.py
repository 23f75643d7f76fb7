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
