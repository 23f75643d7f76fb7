"""The demos' report pieces (eim_harness.report) and the verdict they print (eim_harness.pipeline):
a one-seed interval is over the test items only, so it is marked "items only" and never coloured
or called a clear difference."""

from types import SimpleNamespace

from eim_harness.pipeline import verdict
from eim_harness.report import comparisons_html, diff_class, interval_html


def _comp(n_seeds, lo=0.5, hi=1.5, variant="eim"):
    return {"variant": variant, "reference": "base", "metric": "Bleu_4", "diff": (lo + hi) / 2, "ci95": [lo, hi],
            "n_seeds": n_seeds, "n_images": 200, "n_boot": 2000}


SUMMARY = {"variants": {"base": {"label": "Baseline"}, "eim": {"label": "Baseline + EIM"}}}


def test_a_one_seed_interval_is_items_only_and_not_coloured():
    one, three = _comp(1), _comp(3)
    assert diff_class(one) == "" and diff_class(three) == "pos"
    assert diff_class(_comp(3, -2.0, -1.0)) == "neg" and diff_class(_comp(1, -2.0, -1.0)) == ""
    assert "items only" in interval_html(one) and "items only" not in interval_html(three)
    page = "".join(comparisons_html({**SUMMARY, "comparisons": [one]}))
    assert "class='pos'" not in page and "class='neg'" not in page
    assert "items only" in page and "not training noise" in page  # the label and what it means
    page = "".join(comparisons_html({**SUMMARY, "comparisons": [three]}))
    assert "class='pos'" in page and "items only" not in page


def test_the_verdict_does_not_call_a_one_seed_interval_a_difference():
    task = SimpleNamespace(key_metric="Bleu_4", key_unit="BLEU-4 points", key_scale=100, treatment="eim")
    base, eim = {"label": "Baseline"}, {"label": "Baseline + EIM", "delta_vs_baseline": {"Bleu_4": 0.01}}
    one = verdict(task, base, eim, [_comp(1)])
    assert "items only" in one and "is better" not in one and "over 1 seed and 200 test items" in one
    assert verdict(task, base, eim, [_comp(3)]).endswith("Baseline + EIM is better")
    assert verdict(task, base, eim, [_comp(3, -1.0, 2.0)]).endswith("no clear difference")
