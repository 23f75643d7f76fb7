"""Differences between two models with 95% intervals: a paired bootstrap over seeds and images
(docs/design.md §11).

A benchmark score is a function of per-item statistics summed (or averaged) over the test items:

- COCO BLEU-n: corpus BLEU of the summed n-gram matches, n-gram counts and lengths of each image
  (pycocoevalcap's own per-image statistics, ``closest`` reference length); CIDEr-D and ROUGE-L:
  the mean of pycocoevalcap's per-image scores (CIDEr's document frequencies from the whole test
  set, held fixed); ScienceQA accuracy: the mean of per-question correctness; MME accuracy and
  accuracy+: the means of each image's share of right answers and of "both right".
- So a resample of items is a weight vector ``w`` (how often each item is drawn) and the score
  is ``metric(w @ stats)``: thousands of resamples cost one matrix product.

:func:`paired_bootstrap` takes, for the variant and the reference, one statistics matrix per
seed (``[n_items, n_features]``, rows in the same item order, seed k of both trained alike) and
resamples seeds and items together: each of ``n_boot`` draws picks S seeds with replacement and
n items with replacement (the same items for both models: a paired difference) and records the
mean over the drawn seeds of ``metric(variant) - metric(reference)``. The interval is the 2.5 and
97.5 percentiles of those draws; the point estimate is the difference of the means over seeds on
the whole test set. With 3 seeds the seed level has few distinct draws: the interval still counts
training noise, coarsely, which an image-only bootstrap would leave out.
"""

import numpy as np

SMALL, TINY = 1e-9, 1e-15  # pycocoevalcap BleuScorer's smoothing constants


def bleu_from_stats(sums, n):
    """Corpus BLEU-n from summed per-image statistics ``[..., 10]`` = correct[1..4], guess[1..4],
    test length, closest reference length (pycocoevalcap's formula and smoothing)."""
    sums = np.asarray(sums, dtype=np.float64)
    correct, guess, testlen, reflen = sums[..., :4], sums[..., 4:8], sums[..., 8], sums[..., 9]
    logp = np.log((correct[..., :n] + TINY) / (guess[..., :n] + SMALL)).sum(axis=-1)
    bleu = np.exp(logp / n)
    ratio = (testlen + TINY) / (reflen + SMALL)
    return np.where(ratio < 1, bleu * np.exp(1 - 1 / np.minimum(ratio, 1)), bleu)


def _mean_of(col):
    return lambda sums, count: sums[..., col] / count


# metric -> f(summed per-image features, item count) -> score; COCO columns: correct1..4, guess1..4,
# test length, closest reference length (BLEU), CIDEr, ROUGE_L
COCO_METRICS = {**{f"Bleu_{n}": (lambda n: lambda sums, count: bleu_from_stats(sums[..., :10], n))(n)
                   for n in range(1, 5)},
                "CIDEr": _mean_of(10), "ROUGE_L": _mean_of(11)}
ACCURACY_METRICS = {"accuracy": _mean_of(0)}
# MME per image: [questions right / 2, both right] (eim.evaluation.mme.per_image_stats)
MME_METRICS = {"accuracy": _mean_of(0), "accuracy_plus": _mean_of(1)}


def paired_bootstrap(variant, reference, metric, n_boot=2000, seed=0, scale=1.0):
    """Difference ``metric(variant) - metric(reference)`` with its 95% interval.

    variant, reference: lists (one per seed, paired by position) of ``[n_items, n_features]``
    arrays, rows in the same item order. metric: ``f(summed features [..., F], item count)``.
    Returns ``{"diff", "ci95": [lo, hi], "n_seeds", "n_items", "n_boot"}`` (times ``scale``).
    """
    a = np.stack([np.asarray(x, dtype=np.float64) for x in variant])  # [S, n, F]
    b = np.stack([np.asarray(x, dtype=np.float64) for x in reference])
    if a.shape != b.shape:
        raise ValueError(f"variant and reference statistics differ in shape: {a.shape} vs {b.shape}")
    S, n, _ = a.shape
    point = float(np.mean(metric(a.sum(1), n) - metric(b.sum(1), n))) * scale
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))  # bound the [draws, n] weight matrix
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)]).astype(np.float64)
        seeds = rng.integers(0, S, (k, S))  # [k, S] seeds drawn per resample
        per_seed = metric(np.einsum("kn,snf->ksf", w, a), n) - metric(np.einsum("kn,snf->ksf", w, b), n)  # [k, S]
        diffs[start:start + k] = np.take_along_axis(per_seed, seeds, axis=1).mean(1)
    lo, hi = np.percentile(diffs, [2.5, 97.5]) * scale
    return {"diff": point, "ci95": [float(lo), float(hi)], "n_seeds": S, "n_items": n, "n_boot": n_boot}


def half_width(ci):
    return (ci[1] - ci[0]) / 2

