"""Differences between two models with 95% intervals over seeds and test items
(docs/design.md §11).

A benchmark score is a function of per-item statistics summed (or averaged) over the test items:

- COCO BLEU-n: corpus BLEU of the summed n-gram matches, n-gram counts and lengths of each image
  (pycocoevalcap's own per-image statistics, ``closest`` reference length); CIDEr-D and ROUGE-L:
  the mean of pycocoevalcap's per-image scores (CIDEr's document frequencies from the whole test
  set, held fixed); ScienceQA Avg and IMG: from the sums of each problem's [right, right with an
  image, has an image]; MME accuracy and accuracy+: the means of each image's share of right
  answers and of "both right".
- So a resample of items is a weight vector ``w`` (how often each item is drawn) and the score
  is ``metric(w @ stats)``: thousands of resamples cost one matrix product.

:func:`paired_interval` takes, for the variant and the reference, one statistics matrix per
seed (``[n_items, n_features]``, rows in the same item order, seed k of both trained alike). Its
point estimate is the mean over seeds of each seed's difference on the whole test set; its 95%
interval is ``diff ± t · se``, where ``se²`` adds the seeds' part (the per-seed differences'
sample variance over S) and the items' part (a paired bootstrap of the test items, the same items
for both models and every seed), and ``t`` is Student's with Welch-Satterthwaite degrees of
freedom. Why not resample the seeds too and take percentiles: with three seeds that interval is too
narrow (docs/evidence.md §4), since a resample of three values cannot show how far a fourth seed
may fall.
"""

import math

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
# ScienceQA per problem: [right, right and has an image, has an image] (eim.evaluation.scienceqa)
SCIENCEQA_METRICS = {"Avg": _mean_of(0),  # a resample without image problems scores IMG 0
                     "IMG": lambda sums, count: sums[..., 1] / np.maximum(sums[..., 2], 1e-12)}
# MME per image: [questions right / 2, both right] (eim.evaluation.mme.per_image_stats)
MME_METRICS = {"accuracy": _mean_of(0), "accuracy_plus": _mean_of(1)}


def t_quantile(p, df):
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom (any real df > 0;
    ``inf``: the normal): bisection on the CDF, integrated by Simpson's rule (no scipy)."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    if not math.isfinite(df):
        lo, hi, cdf = 0.0, 10.0, lambda x: 0.5 * math.erfc(-x / math.sqrt(2))
    else:
        if df <= 0:
            raise ValueError(f"df must be positive, got {df}")
        logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        u = np.linspace(0.0, 1.0, 4001)  # x = tan(u * theta): the heavy tail at the grid's end

        def cdf(x):
            theta = math.atan(x)
            t = np.tan(u * theta)
            f = np.exp(logc - (df + 1) / 2 * np.log1p(t * t / df)) * (1 + t * t) * theta  # dx = (1+t^2) theta du
            h = 1.0 / (len(u) - 1)
            return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

        lo, hi = 0.0, 1e7
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return (lo + hi) / 2


def paired_interval(variant, reference, metric, n_boot=2000, seed=0, scale=1.0):
    """Difference ``metric(variant) - metric(reference)`` with its 95% interval.

    variant, reference: lists (one per seed, paired by position) of ``[n_items, n_features]``
    arrays, rows in the same item order. metric: ``f(summed features [..., F], item count)``.

    The point estimate is the mean over seeds of each seed's difference on the whole test set.
    Its variance has two parts, estimated apart (docs/design.md §11): the seeds', the sample
    variance of the per-seed differences over S; and the test items', the variance of that mean
    over ``n_boot`` paired resamples of the items (the same items for both models and every
    seed). The interval is ``diff ± t(0.975, df) · se`` with ``se² = seeds² + items²`` and df from
    Welch-Satterthwaite (S - 1 for the seed part, the item part as known): with few seeds t's
    heavy tail, not a resample of three values, carries the uncertainty about training noise.
    One seed: items only (df = inf), saying nothing about training noise.
    Returns ``{"diff", "ci95": [lo, hi], "se", "se_seeds", "se_items", "df", "n_seeds",
    "n_items", "n_boot"}`` (differences and errors times ``scale``).
    """
    a = np.stack([np.asarray(x, dtype=np.float64) for x in variant])  # [S, n, F]
    b = np.stack([np.asarray(x, dtype=np.float64) for x in reference])
    if a.shape != b.shape:
        raise ValueError(f"variant and reference statistics differ in shape: {a.shape} vs {b.shape}")
    S, n, _ = a.shape
    per_seed = (metric(a.sum(1), n) - metric(b.sum(1), n)) * scale  # [S]
    point = float(np.mean(per_seed))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))  # bound the [draws, n] weight matrix
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)]).astype(np.float64)
        d = metric(np.einsum("kn,snf->ksf", w, a), n) - metric(np.einsum("kn,snf->ksf", w, b), n)  # [k, S]
        draws[start:start + k] = d.mean(1) * scale
    var_items = float(np.var(draws, ddof=1)) if n_boot > 1 else 0.0
    var_seeds = float(np.var(per_seed, ddof=1)) / S if S > 1 else 0.0
    var = var_seeds + var_items
    df = math.inf if var_seeds == 0 else var ** 2 / (var_seeds ** 2 / (S - 1))
    half = t_quantile(0.975, df) * math.sqrt(var)
    return {"diff": point, "ci95": [point - half, point + half], "se": math.sqrt(var),
            "se_seeds": math.sqrt(var_seeds), "se_items": math.sqrt(var_items),
            "df": (None if not math.isfinite(df) else df), "n_seeds": S, "n_items": n, "n_boot": n_boot}


def half_width(ci):
    return (ci[1] - ci[0]) / 2

