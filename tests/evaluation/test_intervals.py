"""Paired intervals over seeds and items (eim.evaluation.intervals) and the per-image statistics behind them."""

import math

import numpy as np
import pytest

from eim.evaluation.intervals import ACCURACY_METRICS, COCO_METRICS, bleu_from_stats, paired_interval, t_quantile
from eim.evaluation.coco import score_captions

GTS = {1: ["a red circle on the left", "one red disc", "a circle that is red"],
       2: ["two blue squares and a green cross", "blue blocks beside a green plus sign"],
       3: ["a small yellow triangle at the top", "a tiny yellow triangle"],
       4: ["an orange diamond below a purple circle", "a purple disc above an orange rhombus"]}
RES = {1: "a red circle", 2: "two blue squares and a cross", 3: "a yellow triangle at the top of it",
       4: "a purple circle"}


def test_metrics_from_per_image_statistics_equal_pycocoevalcap():
    """Summed per-image statistics give back pycocoevalcap's corpus BLEU-1..4, CIDEr and ROUGE-L."""
    out = score_captions(GTS, RES, spice=False, meteor=False, per_image=True)
    stats = np.array(out["per_image"]["stats"])
    assert out["per_image"]["ids"] == list(GTS) and stats.shape == (4, 12)
    for m, f in COCO_METRICS.items():
        assert f(stats.sum(0), len(stats)) == pytest.approx(out[m], abs=1e-9), m
    assert out["METEOR"] is None and "METEOR" in out["unavailable"]


def test_bleu_brevity_penalty_and_smoothing():
    s = np.array([4, 3, 2, 1, 4, 3, 2, 1, 4, 8], dtype=float)  # all n-grams right, half the length
    assert bleu_from_stats(s, 4) == pytest.approx(np.exp(1 - 2))
    assert bleu_from_stats(np.array([0, 0, 0, 0, 4, 3, 2, 1, 4, 4.0]), 1) < 1e-14


def test_identical_models_differ_by_zero_and_a_shift_is_inside_the_interval():
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 2, (500, 1)).astype(float) for _ in range(3)]
    same = paired_interval(a, a, ACCURACY_METRICS["accuracy"], n_boot=300, scale=100)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and same["n_seeds"] == 3 and same["n_items"] == 500
    better = [np.maximum(x, (rng.random((500, 1)) < 0.2).astype(float)) for x in a]  # ~+10 points
    c = paired_interval(better, a, ACCURACY_METRICS["accuracy"], n_boot=500, scale=100)
    assert c["ci95"][0] < c["diff"] < c["ci95"][1] and c["ci95"][0] > 3 and c["ci95"][1] < 17
    worse = paired_interval(a, better, ACCURACY_METRICS["accuracy"], n_boot=500, scale=100)
    assert worse["diff"] == pytest.approx(-c["diff"]) and worse["ci95"][1] < 0
    with pytest.raises(ValueError, match="differ in shape"):
        paired_interval(a, a[:2], ACCURACY_METRICS["accuracy"])


def test_seed_noise_widens_the_interval():
    """Seeds that disagree widen the interval beyond what the images alone give."""
    rng = np.random.default_rng(1)
    base = [rng.integers(0, 2, (400, 1)).astype(float) for _ in range(3)]
    steady = [np.maximum(x, (rng.random((400, 1)) < 0.1).astype(float)) for x in base]
    noisy = [np.maximum(x, (rng.random((400, 1)) < p).astype(float)) for x, p in zip(base, (0.0, 0.1, 0.3))]
    w_steady = np.diff(paired_interval(steady, base, ACCURACY_METRICS["accuracy"], n_boot=800)["ci95"])
    w_noisy = np.diff(paired_interval(noisy, base, ACCURACY_METRICS["accuracy"], n_boot=800)["ci95"])
    assert w_noisy > 1.5 * w_steady


def test_t_quantiles_match_the_table():
    """Student's t 97.5% points (any table), a fractional df between its neighbours, the normal at inf."""
    for df, want in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (9, 2.2622), (30, 2.0423), (1e6, 1.9600)]:
        assert t_quantile(0.975, df) == pytest.approx(want, abs=2e-4), df
    assert t_quantile(0.975, 3) < t_quantile(0.975, 2.5) < t_quantile(0.975, 2)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.95, 4) == pytest.approx(2.1318, abs=2e-4)
    with pytest.raises(ValueError):
        t_quantile(0.3, 4)


def _noisy_training(rng, seeds, n, gain, seed_sd):
    """Per-item correctness of a reference and a variant, `seeds` trainings each: items differ in
    difficulty; each training shifts a model's skill; the variant's shift adds `gain` and its own
    seed noise, the part of the difference that only more seeds can average out."""
    difficulty = rng.normal(0, 1, n)
    a, b = [], []
    for _ in range(seeds):
        ref = rng.normal(0, 0.1)
        var = ref + gain + rng.normal(0, seed_sd)
        u = rng.random(n)
        b.append((u < 1 / (1 + np.exp(-(difficulty + ref)))).astype(float)[:, None])
        a.append((u < 1 / (1 + np.exp(-(difficulty + var)))).astype(float)[:, None])
    return a, b


def test_three_seed_intervals_cover_the_truth_when_training_noise_dominates():
    """200 simulated three-seed comparisons whose noise is mostly the seeds': the interval holds the
    true gain (the mean over trainings and items, known here) at about its 95% rate. A seed-and-item
    percentile bootstrap, as the first version did, covers it in 77% of them."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 1, 200_000)
    shifts = [(r, r + 0.2 + rng.normal(0, 0.3)) for r in rng.normal(0, 0.1, 2000)]
    truth = np.mean([np.mean(1 / (1 + np.exp(-(difficulty[:20_000] + v)))
                             - 1 / (1 + np.exp(-(difficulty[:20_000] + r)))) for r, v in shifts])
    hits, widths = 0, []
    for k in range(200):
        a, b = _noisy_training(rng, 3, 300, 0.2, 0.3)
        c = paired_interval(a, b, ACCURACY_METRICS["accuracy"], n_boot=300, seed=k)
        hits += c["ci95"][0] <= truth <= c["ci95"][1]
        widths.append(c["se_seeds"] / c["se"])
        assert c["df"] >= 2
    assert hits / 200 >= 0.9
    assert np.median(widths) > 0.7  # the seeds are most of the error here


def test_one_seed_is_an_items_only_interval():
    rng = np.random.default_rng(2)
    a, b = _noisy_training(rng, 1, 400, 0.5, 0.0)
    c = paired_interval(a, b, ACCURACY_METRICS["accuracy"], n_boot=500)
    assert c["n_seeds"] == 1 and c["se_seeds"] == 0 and c["df"] is None
    assert c["ci95"][1] - c["diff"] == pytest.approx(1.959964 * c["se_items"])
