"""Benchmark: bank building throughput vs a plain forward of the same encoder (issue 4).

    .venv/bin/python benchmarks/banks.py                 # N=2048 rows, small GPT-2 and CLIP
    .venv/bin/python benchmarks/banks.py --rows 8192 --width 256 --layers 4

For the ``lm`` bank (frozen LLM, [EOS] state) and the ``text`` bank (``CLIPModel.get_text_features``
on the CLIP tokenizer's own encoding), times ``BankProvider`` building the whole bank (loading the
model, tokenising, batching, normalising, float16 parts written atomically, final file) against
the bare encoder forward on the same padded batches under ``inference_mode`` (tokenising
excluded). Target: ≥ 0.95×.
Prints a markdown table.
"""

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import eim  # noqa: F401  (sets OMP_WAIT_POLICY before torch)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

WORDS = "a the red green blue yellow circle square triangle left right above below of big small two three".split()


class Rows(torch.utils.data.Dataset):
    def __init__(self, texts):
        from eim.data.sample import Sample

        self.samples = [Sample(index=i, image=None, instruction="", response=t) for i, t in enumerate(texts)]
        self.files, self.format, self.split = [], "bench", "train"

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)

    from helpers import tiny_recipe
    from eim.banks import BankProvider
    from eim.model.splice import TextEncoder, pad_ids
    from eim.model.tiny import make_clip_tokenizer, make_tiny_clip, make_tiny_lm, make_tokenizer
    from eim.model.vision import features_of
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20))) + "." for _ in range(args.rows)]
    root = Path(tempfile.mkdtemp())
    tok = make_tokenizer(texts[:500], vocab_size=400)
    make_tiny_clip(root / "clip", make_clip_tokenizer(texts[:500], vocab_size=400), width=args.width,
                   text_width=args.width, layers=args.layers, heads=4,
                   projection_dim=args.width)
    make_tiny_lm(root / "gpt2", tok, width=args.width, layers=args.layers, heads=4)
    recipe = tiny_recipe(root, "clipcap_eim", overrides={"eim.bank_batch_size": args.batch, "train.max_length": 64})
    ds = Rows(texts)

    lm = AutoModelForCausalLM.from_pretrained(root / "gpt2").eval()
    ltok = AutoTokenizer.from_pretrained(root / "gpt2")
    enc = TextEncoder(ltok, 64)
    clip = CLIPModel.from_pretrained(root / "clip").eval()
    ctok = AutoTokenizer.from_pretrained(root / "clip")

    def batches(encode_ids, pad):
        out = []
        for i in range(0, len(texts), args.batch):
            ids, lengths = pad_ids([encode_ids(t) for t in texts[i : i + args.batch]], pad)
            mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
            out.append((ids, mask))
        return out

    lm_batches = batches(lambda t: enc.encode_text_eos("", t), ltok.pad_token_id)
    max_len = clip.config.text_config.max_position_embeddings  # the CLIP tokenizer's own encoding
    text_batches = [(e.input_ids, e.attention_mask) for e in (
        ctok(texts[i : i + args.batch], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        for i in range(0, len(texts), args.batch))]

    def plain_lm():
        with torch.inference_mode():
            for ids, mask in lm_batches:
                lm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)

    def plain_text():
        with torch.inference_mode():
            for ids, mask in text_batches:
                features_of(clip.get_text_features(input_ids=ids, attention_mask=mask))

    def build(name):
        d = tempfile.mkdtemp()
        BankProvider(recipe, ds, d, quiet=True).get(name)

    rows = []
    for name, plain in (("lm", plain_lm), ("text", plain_text)):
        plain()  # warm-up
        tb, tp = [], []
        for _ in range(3):  # interleaved, median: the host is shared
            t0 = time.perf_counter(); build(name); tb.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); plain(); tp.append(time.perf_counter() - t0)
        b, p = sorted(tb)[1], sorted(tp)[1]
        rows.append((name, b, p))
    load = os.getloadavg()[0]
    print(f"bank building vs plain forward: {args.rows} rows, width {args.width}, {args.layers} layers, "
          f"batch {args.batch}, {torch.get_num_threads()} threads, load {load:.1f}\n")
    print("| bank | build (s) | rows/s | plain forward (s) | rows/s | build / plain throughput |")
    print("|---|---|---|---|---|---|")
    for name, b, p in rows:
        print(f"| {name} | {b:.2f} | {args.rows / b:,.0f} | {p:.2f} | {args.rows / p:,.0f} | {p / b:.2f}× |")


if __name__ == "__main__":
    main()
