"""Benchmark: bank building throughput vs a plain forward of the same encoder (issue 4).

    .venv/bin/python benchmarks/banks.py                 # N=2048 rows, small GPT-2 and CLIP
    .venv/bin/python benchmarks/banks.py --rows 8192 --width 256 --layers 4

For the ``lm`` bank (frozen LLM, [EOS] state) and the ``text`` bank (``CLIPModel.get_text_features``
on the CLIP tokenizer's own encoding), times ``BankProvider`` building the whole bank (loading the
model, tokenising, batching, normalising, float16 parts written atomically, final file) against
the bare encoder forward under ``inference_mode`` (tokenising excluded) on padded batches in
dataset order — what a plain loop over the data does — and, beside it, on the build's own batches
(rows sorted by length within each part, so less padding): the first ratio is the issue's
target (≥ 0.95×), the second the build's own overhead over the same work. The LM forward is the
decoder body (``base_model``, with the fused GELU of :func:`eim.model.lm.fused_activations`),
without vocabulary logits, as the build runs it.
Prints a markdown table.
"""

import argparse
import os
import random
import statistics
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
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians are printed)")
    args = ap.parse_args(argv)

    from helpers import tiny_recipe
    from eim.banks import PART_ROWS, BankProvider
    from eim.model.lm import fused_activations
    from eim.model.splice import TextEncoder, pad_ids
    from eim_harness.tiny import make_clip_tokenizer, make_tiny_clip, make_tiny_lm, make_tokenizer
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

    lm = fused_activations(AutoModelForCausalLM.from_pretrained(root / "gpt2").eval())  # as build_lm loads it
    ltok = AutoTokenizer.from_pretrained(root / "gpt2")
    enc = TextEncoder(ltok, 64)
    clip = CLIPModel.from_pretrained(root / "clip").eval()
    ctok = AutoTokenizer.from_pretrained(root / "clip")

    def batches(seqs, pad, grouped):
        out = []
        for s0 in range(0, len(seqs), PART_ROWS):  # the build sorts within each part
            part = seqs[s0 : s0 + PART_ROWS]
            if grouped:
                part = sorted(part, key=len)
            for i in range(0, len(part), args.batch):
                ids, lengths = pad_ids(part[i : i + args.batch], pad)
                mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
                out.append((ids, mask))
        return out

    lm_seqs = [enc.encode_text_eos("", t) for t in texts]
    max_len = clip.config.text_config.max_position_embeddings  # the CLIP tokenizer's own encoding
    text_seqs = ctok(texts, truncation=True, max_length=max_len).input_ids  # padded per batch below (right, its pad id)
    body = lm.base_model

    def plain_lm(grouped):
        bs = batches(lm_seqs, ltok.pad_token_id, grouped)

        def run():
            with torch.inference_mode():
                for ids, mask in bs:
                    body(input_ids=ids, attention_mask=mask, use_cache=False)
        return run

    def plain_text(grouped):
        bs = batches(text_seqs, ctok.pad_token_id, grouped)

        def run():
            with torch.inference_mode():
                for ids, mask in bs:
                    features_of(clip.get_text_features(input_ids=ids, attention_mask=mask))
        return run

    def build(name):
        d = tempfile.mkdtemp()
        BankProvider(recipe, ds, d, quiet=True).get(name)

    rows = []
    for name, plain in (("lm", plain_lm), ("text", plain_text)):
        naive, grouped = plain(False), plain(True)
        naive()  # warm-up
        tb, tp, tg = [], [], []
        for _ in range(args.reps):  # interleaved, median: the host may be shared
            t0 = time.perf_counter(); build(name); tb.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); naive(); tp.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); grouped(); tg.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(tb), statistics.median(tp), statistics.median(tg)))
    load = os.getloadavg()[0]
    print(f"bank building vs plain forward: {args.rows} rows, width {args.width}, {args.layers} layers, "
          f"batch {args.batch}, {torch.get_num_threads()} threads, load {load:.1f}\n")
    print("| bank | build (s) | rows/s | plain forward, data order (s) | rows/s | build / plain throughput "
          "| plain forward, build's batches (s) | build / same batches |")
    print("|---|---|---|---|---|---|---|---|")
    for name, b, p, g in rows:
        print(f"| {name} | {b:.2f} | {args.rows / b:,.0f} | {p:.2f} | {args.rows / p:,.0f} | {p / b:.2f}× "
              f"| {g:.2f} | {g / b:.2f}× |")


if __name__ == "__main__":
    main()
