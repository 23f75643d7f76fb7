"""Benchmark: one ``eim train clipcap`` optimiser step against ClipCap's own training step.

    .venv/bin/python benchmarks/step.py /path/to/CLIP_prefix_caption/train.py
    .venv/bin/python benchmarks/step.py /tmp/clipcap_train.py --steps 6 --threads 2

ClipCap's ``train.py`` (rmokady/CLIP_prefix_caption, public) is imported from the given path at
run time, never copied here: its ``ClipCaptionModel`` (MLP mapper) is built, and its training
step — the body of ``train()``'s loop: zero the gradients, forward with the attention mask,
cross-entropy on the caption logits with ``ignore_index=0``, backward, AdamW step, schedule step —
runs on in-memory tensors (its dataset class reads a pickle; that part is not used). Two shims
let the 2021 file import under current libraries: ``transformers.AdamW`` (removed from
transformers) is ``torch.optim.AdamW`` with transformers' old defaults (``eps=1e-6``, no weight
decay), and ``GPT2LMHeadModel.from_pretrained('gpt2')`` loads the benchmark's GPT-2 instead of
downloading.

Both sides use the same GPT-2 configuration (12 layers × 768, 12 heads, the demo tokenizer's
400-token vocabulary, random weights), batch 40, a 10-token prefix from the ClipCap MLP mapper
(512 -> 3840 Tanh -> 7680) and 30 caption tokens (29 + EOS on the eim side, padded to 30 on
ClipCap's), AdamW at lr 2e-5, float32. eim's side is the real trainer (``Trainer._optimizer_step``
on its DataLoader with the collator, cached 512-d CLIP features, accelerate's wrapping); the
steps alternate eim, ClipCap, eim, … in one process and the table gives medians.
"""

import eim  # noqa: F401  (first, as the CLI: sets OMP_WAIT_POLICY before torch loads OpenMP; both sides share it)

import argparse
import functools
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PREFIX, CAPTION, BATCH, WIDTH, LAYERS, HEADS, VOCAB, CLIP_DIM = 10, 30, 40, 768, 12, 12, 400, 512


def _words(n_words, seed):
    """Caption-like text over ~200 made-up words (enough for the BPE to fill a 400-token vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    syl = ["ka", "lo", "mi", "tu", "re", "sa", "no", "vi", "de", "po", "ri", "gu", "fe", "ba", "zo"]
    pool = [a + b + c for a in syl[:6] for b in syl[5:11] for c in syl[9:]][:200] + ["a", "the", "on", "with"]
    return " ".join(pool[int(i)] for i in torch.randint(0, len(pool), (n_words,), generator=g))


def make_assets(root):
    """Tokenizer, a small CLIP whose pooled output is 512-d, and the 12 × 768 GPT-2 on disk."""
    from eim.api import quiet_transformers
    from eim_harness.tiny import make_clip_tokenizer, make_tiny_clip, make_tiny_lm, make_tokenizer

    quiet_transformers()
    tok = make_tokenizer([_words(40, s) for s in range(500)], vocab_size=VOCAB)
    assert len(tok) == VOCAB, len(tok)
    make_tiny_clip(root / "clip", make_clip_tokenizer([_words(40, s) for s in range(100)]), image_size=32, patch_size=8, width=32, layers=1, heads=2,
                   projection_dim=CLIP_DIM, text_width=32)
    make_tiny_lm(root / "lm", tok, arch="gpt2", width=WIDTH, layers=LAYERS, heads=HEADS)
    return tok


def captions(tok, n, n_tokens):
    """``n`` captions of exactly ``n_tokens`` tokens each (words added until the count is reached)."""
    out = []
    for s in range(n):
        words = _words(3 * n_tokens, 1000 + s).split()
        ids = []
        for k in range(1, len(words) + 1):
            ids = tok(" ".join(words[:k]), add_special_tokens=False).input_ids
            if len(ids) >= n_tokens:
                break
        out.append(tok.decode(ids[:n_tokens]))
        assert len(tok(out[-1], add_special_tokens=False).input_ids) == n_tokens, out[-1]
    return out


def eim_side(root, tok, texts, steps, unfused=False):
    """The trainer of ``eim train clipcap`` set up for one stage; returns ``step()``.

    ``unfused``: with transformers' ``gelu_new`` and the single-tensor AdamW, as before issue 16
    (the ablation row; the splice stays vectorised)."""
    import PIL.Image

    import eim.model.lm as lm_mod
    import eim.training.trainer as trainer_mod
    from eim.recipe import load_recipe
    from eim.data.sample import Sample
    from eim.model.multimodal import build_model
    from eim.model.vision import load_image_processor
    from eim.training.trainer import Trainer

    recipe = load_recipe("clipcap", {"vision.name_or_path": str(root / "clip"), "lm.name_or_path": str(root / "lm"),
                                     "train.warmup_steps": 0, "train.batch_size": BATCH, "stages.0.epochs": None,
                                     "stages.0.steps": steps})
    saved = lm_mod.fused_activations, trainer_mod.adamw
    if unfused:
        lm_mod.fused_activations = lambda m: m
        trainer_mod.adamw = lambda params, lr, wd, fused=True: torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    torch.manual_seed(0)
    model, _ = build_model(recipe)
    proc = load_image_processor(str(root / "clip"), model.vision.vision_model.config.image_size)
    images = root / "images"
    images.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(1)
    for i in range(len(texts)):  # small random images: the trainer caches their CLIP features once
        if not (images / f"{i}.png").exists():
            pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
            PIL.Image.fromarray(pixels).save(images / f"{i}.png")
    data = [Sample(index=i, image=str(images / f"{i}.png"), instruction="", response=t) for i, t in enumerate(texts)]
    trainer = Trainer(recipe, model, tok, proc, {"main": data}, root / "run", quiet=True)
    model.to(trainer.acc.device)
    stage = recipe.stages[0]
    run = trainer._setup_stage(0, stage, root / "run" / "stage-0-base", False)
    loader = trainer._loader(run)
    trainer._prepare(run)
    lm_mod.fused_activations, trainer_mod.adamw = saved
    batches = iter(loader)
    return lambda: trainer._optimizer_step(run, batches)["loss"]


def clipcap_side(train_py, root, tok, texts):
    """ClipCap's ``ClipCaptionModel`` and its loop's step on in-memory tensors; returns ``step()``."""
    import transformers
    from transformers import GPT2LMHeadModel

    if not hasattr(transformers, "AdamW"):  # removed from transformers; the old class defaulted to these
        transformers.AdamW = functools.partial(torch.optim.AdamW, eps=1e-6, weight_decay=0.0)
    real = GPT2LMHeadModel.from_pretrained.__func__
    GPT2LMHeadModel.from_pretrained = classmethod(lambda cls, name, *a, **k: real(cls, str(root / "lm"), *a, **k))
    spec = importlib.util.spec_from_file_location("clipcap_train", train_py)
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    torch.manual_seed(0)
    model = cc.ClipCaptionModel(PREFIX, prefix_size=CLIP_DIM, mapping_type=cc.MappingType.MLP)
    model.train()
    opt = transformers.AdamW(model.parameters(), lr=2e-5)
    sched = transformers.get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=10_000)
    g = torch.Generator().manual_seed(2)
    ids = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in texts]
    tokens = torch.tensor([i[:CAPTION] for i in ids])  # [N, 30] (its loader pads to max_seq_len with 0)
    prefixes = torch.randn(len(texts), CLIP_DIM, generator=g)
    mask = torch.ones(len(texts), PREFIX + CAPTION)  # its dataset: prefix ones + caption mask
    state = {"i": 0}

    def step():  # ClipCap train(): the loop body, on the next batch
        s = state["i"] % (len(texts) // BATCH) * BATCH
        state["i"] += 1
        t, m, p = tokens[s : s + BATCH], mask[s : s + BATCH], prefixes[s : s + BATCH]
        model.zero_grad()
        out = model(t, p, m)
        logits = out.logits[:, PREFIX - 1 : -1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.flatten(), ignore_index=0)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        return loss.item()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clipcap_train_py", help="path of ClipCap's train.py (rmokady/CLIP_prefix_caption)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per side (after one warm-up step each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ablation", action="store_true",
                    help="also time eim with gelu_new and the single-tensor AdamW (the kernels before issue 16)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n = BATCH * (a.steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = make_assets(root)
        texts = captions(tok, n, CAPTION - 1)
        sides = {"eim": eim_side(root, tok, texts, a.steps + 2),
                 "clipcap": clipcap_side(a.clipcap_train_py, root, tok, texts)}
        if a.ablation:
            sides["unfused"] = eim_side(root, tok, texts, a.steps + 2, unfused=True)
        times = {name: [] for name in sides}
        for i in range(a.steps + 1):
            for name, fn in sides.items():
                t0 = time.perf_counter()
                fn()
                if i:
                    times[name].append(time.perf_counter() - t0)
    c = statistics.median(times["clipcap"])
    print(f"torch {torch.__version__}, {a.threads} threads on {os.cpu_count()} CPUs; GPT-2 {LAYERS} × {WIDTH}, "
          f"vocab {VOCAB}, batch {BATCH}, {PREFIX} prefix + {CAPTION} caption tokens, AdamW, float32; "
          f"{a.steps} steps each, interleaved, load avg {os.getloadavg()[0]:.1f}\n")
    print("| | step (s), median | min–max (s) | samples/s | throughput vs ClipCap |")
    print("|---|---|---|---|---|")
    rows = [("ClipCap train.py", "clipcap"), ("eim train clipcap", "eim"),
            ("eim, gelu_new + single-tensor AdamW (ablation)", "unfused")]
    for label, name in rows:
        if name not in times:
            continue
        t = times[name]
        m = statistics.median(t)
        print(f"| {label} | {m:.2f} | {min(t):.2f}–{max(t):.2f} | {BATCH / m:.2f} | {c / m:.2f}× |")


if __name__ == "__main__":
    sys.exit(main())
