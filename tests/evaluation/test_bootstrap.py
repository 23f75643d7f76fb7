"""Paired bootstrap intervals (eim.evaluation.bootstrap) and the per-image statistics behind them."""

import numpy as np
import pytest

from eim.evaluation.bootstrap import ACCURACY_METRICS, COCO_METRICS, bleu_from_stats, paired_bootstrap
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
    same = paired_bootstrap(a, a, ACCURACY_METRICS["accuracy"], n_boot=300, scale=100)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and same["n_seeds"] == 3 and same["n_items"] == 500
    better = [np.maximum(x, (rng.random((500, 1)) < 0.2).astype(float)) for x in a]  # ~+10 points
    c = paired_bootstrap(better, a, ACCURACY_METRICS["accuracy"], n_boot=500, scale=100)
    assert c["ci95"][0] < c["diff"] < c["ci95"][1] and c["ci95"][0] > 5 and c["ci95"][1] < 15
    worse = paired_bootstrap(a, better, ACCURACY_METRICS["accuracy"], n_boot=500, scale=100)
    assert worse["diff"] == pytest.approx(-c["diff"]) and worse["ci95"][1] < 0
    with pytest.raises(ValueError, match="differ in shape"):
        paired_bootstrap(a, a[:2], ACCURACY_METRICS["accuracy"])


def test_seed_noise_widens_the_interval():
    """Seeds that disagree widen the interval beyond what the images alone give."""
    rng = np.random.default_rng(1)
    base = [rng.integers(0, 2, (400, 1)).astype(float) for _ in range(3)]
    steady = [np.maximum(x, (rng.random((400, 1)) < 0.1).astype(float)) for x in base]
    noisy = [np.maximum(x, (rng.random((400, 1)) < p).astype(float)) for x, p in zip(base, (0.0, 0.1, 0.3))]
    w_steady = np.diff(paired_bootstrap(steady, base, ACCURACY_METRICS["accuracy"], n_boot=800)["ci95"])
    w_noisy = np.diff(paired_bootstrap(noisy, base, ACCURACY_METRICS["accuracy"], n_boot=800)["ci95"])
    assert w_noisy > 1.5 * w_steady
