"""Batches of realistic, unequal lengths for ``benchmarks/gpu_real_scale.py``, padded as the trainer pads.

Rows are drawn from fixed length distributions, in text tokens of the stage's template (what
:func:`eim.training.tracking.batch_tokens` counts; an image row adds its 576 positions):

- **instruct** (``llava_v1_5_mix665k.json``, the ``vicuna_v1`` stages): a mixture over the
  sources of LLaVA-1.5's instruction data, weighted by their sizes as the LLaVA-1.5 paper
  (Liu et al., "Improved Baselines with Visual Instruction Tuning", its data-mixture table) lists
  them; ShareGPT's 40K text-only conversations are left out, because ``group_by:
  modality_length`` puts text-only rows in batches of their own (a benchmark of image batches
  never holds one). **Each source's length is an assumption, not a measurement** (no copy of
  mix665k or Vicuna's tokenizer is available offline): a log-normal whose median is estimated
  from the source's layout in mix665k — LLaVA's system line and roles (~45 tokens), the questions
  of one image joined into one conversation (VQAv2 ~5 per image, GQA ~13, OCR-VQA ~5, RefCOCO and
  VG several regions with their box coordinates), short answers ("a single word or phrase") or
  LLaVA-Instruct's long ones. Replace ``MIX665K`` with measured lengths when they are at hand.
- **captions** (LCS-558K, the ``plain`` stages): BLIP captions of about ten words, one
  log-normal (median 14 tokens: the caption and its separator) — also an assumption.

Every draw is capped at ``max_length − 576`` text tokens for an image row, so no row is truncated
whether ``train.max_length`` counts the image's positions (LLaVA's ``model_max_length``) or the
text only, and raised to the template's one-word rendering. A batch is ``rows`` draws sorted
longest first (LLaVA's ``group_by_modality_length`` sorts each mega-batch: with one process the
batch *is* the mega-batch), padded by the collator to its longest row. Seeded: every run draws
the same rows. The toy run (``--toy``) maps the same draws onto its short rows:
``least + (L − lo) / 8``, ``lo`` the mixture's own least length (``KINDS``).
"""

import math
import random

# (source, conversations, median text tokens, log-normal sigma); sizes: the LLaVA-1.5 paper's table
MIX665K = [
    ("LLaVA-Instruct (conversation, detail, complex reasoning)", 158_000, 260, 0.45),
    ("VQAv2", 83_000, 190, 0.35),
    ("GQA", 72_000, 400, 0.40),
    ("OKVQA", 9_000, 80, 0.25),
    ("OCR-VQA", 80_000, 170, 0.35),
    ("A-OKVQA", 66_000, 110, 0.30),
    ("TextCaps", 22_000, 75, 0.20),
    ("RefCOCO", 48_000, 300, 0.45),
    ("VG", 86_000, 430, 0.45),
]
LCS558K = [("BLIP captions", 558_128, 14, 0.30)]
KINDS = {"instruct": (MIX665K, 45), "captions": (LCS558K, 3)}  # mixture, the template's least length (lo)
TOY_SCALE = 1 / 8
SEED = 0


def draw(kind, n, rng):
    """``n`` text lengths (tokens) from ``kind``'s mixture: a source by its size, then its log-normal."""
    mix = KINDS[kind][0]
    sources = rng.choices(mix, weights=[m[1] for m in mix], k=n)
    return [round(med * math.exp(rng.gauss(0.0, sig))) for _, _, med, sig in sources]


def target(length, kind, least, cap, toy):
    """The length a row is fitted to: the draw, or its toy image, within ``[least, cap]``."""
    if toy:
        length = least + (length - KINDS[kind][1]) * TOY_SCALE
    return int(min(cap, max(least, round(length))))


def fit(make, encode, want, start):
    """``make(n)`` (a sample whose response has ``n`` words) whose ``encode`` length is ``want`` or the
    longest below it (about one token per word: a few corrections reach it)."""
    n, best = max(1, start), 1
    for _ in range(12):
        got = encode(make(n))
        if got <= want:
            best = max(best, n)
        if got == want:
            return make(n)
        n = max(1, n + want - got)
    return make(best)


def batches(kind, size, encoder, n_image, sample, toy):
    """``size["steps"]`` batches of ``size["batch"]`` samples of ``kind``, each sorted longest first.

    ``encoder``: the stage's :class:`eim.model.splice.TextEncoder`; ``sample(n, i)``: sample ``i``
    (index, image) with an ``n``-word response. The rows' text lengths are the drawn ones where the
    template allows (a row cannot be shorter than its one-word rendering)."""
    rng = random.Random(f"{SEED}-{kind}")
    cap = size["positions"] - n_image
    encode = lambda s: len(encoder.encode_sample(s)[0])  # noqa: E731
    least = encode(sample(1, 0))
    out, i = [], 0
    for _ in range(size["steps"]):
        rows = []
        for length in draw(kind, size["batch"], rng):
            want = target(length, kind, least, cap, toy)
            rows.append(fit(lambda n, i=i: sample(n, i), encode, want, want - least + 1))
            i += 1
        out.append(sorted(rows, key=lambda s: -encode(s)))
    return out


def describe(kind, bs, encoder, n_image):
    """One line: the rows' text lengths and the padding the collator adds to these batches."""
    lengths = [[len(encoder.encode_sample(s)[0]) for s in b] for b in bs]
    flat = sorted(x for b in lengths for x in b)
    real = sum(x + n_image for x in flat)
    padded = sum(len(b) * (max(b) + n_image) for b in lengths)
    src = "mix665k's image conversations" if kind == "instruct" else "LCS-558K captions"
    return (f"{kind} ({src}; assumed lengths, benchmarks/real_lengths.py): {len(bs)} batches of {len(bs[0])} rows, "
            f"text tokens per row {flat[0]:,}–{flat[-1]:,} (median {flat[len(flat) // 2]:,}), padded to "
            f"{', '.join(f'{max(b) + n_image:,}' for b in lengths)} positions: {1 - real / padded:.0%} padding")
