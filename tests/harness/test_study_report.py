"""A study's report.html (eim_harness.study_report) from a study built by hand: the seed count as
run in the title, one-seed intervals marked items-only, the selection in points like the tables."""

from eim_harness.study_report import write_study_report


def _study(seeds, spec_seeds, n_seeds):
    metric = {"mean": 76.63, "std": 0.0 if seeds == 1 else 1.2, "per_seed": [76.63] * seeds}
    variant = {"label": "ClipCap", "metrics": {"CIDEr": metric}, "stages": [], "train_seconds_mean": 1.0,
               "run_dirs": []}
    comp = {"variant": "eim", "reference": "clipcap", "metric": "CIDEr", "diff": 1.0, "ci95": [0.5, 1.5],
            "n_seeds": n_seeds, "n_images": 200}
    selection = {"variant": "eim", "split": "val", "metric": "CIDEr", "unit": "points",
                 "tried": [{"point": {"stages.base_ie.losses.ie": 1.0}, "value": 76.63},
                           {"point": {"stages.base_ie.losses.ie": 0.3}, "value": 74.1}],
                 "chosen": {"stages.base_ie.losses.ie": 1.0}}
    cond = {"world": {"train": 10, "val": 2, "test": 200}, "variants": {"clipcap": variant, "eim": variant},
            "comparisons": [comp], "selection": [selection]}
    return {"spec": "clipcap-eim", "title": "ClipCap vs ClipCap + EIM (the headline comparison)", "preset": "test",
            "seeds": seeds, "spec_seeds": spec_seeds, "select_on": "val", "metrics": ["CIDEr"], "table": ["CIDEr"],
            "conditions": {"transfer": cond}, "reproduce": {"command": "eim study clipcap-eim", "versions": {}}}


def test_one_seed_study_says_its_seeds_and_marks_items_only(tmp_path):
    write_study_report(tmp_path, _study(1, 10, 1))
    page = (tmp_path / "report.html").read_text()
    assert "<h1>ClipCap vs ClipCap + EIM (the headline comparison): 1 seed</h1>" in page
    assert "1 seed (the spec names 10)" in page and "ten seeds" not in page
    row = next(line for line in page.splitlines() if "eim − clipcap" in line)
    assert "class='pos'" not in row and "items only" in row  # [+0.50, +1.50] over the items alone
    assert "76.63 ±" not in page  # one seed: no spread to show
    assert (tmp_path / "plots" / "forest_transfer_CIDEr.png").is_file()


def test_three_seed_study_colours_a_clear_difference(tmp_path):
    write_study_report(tmp_path, _study(3, 3, 3))
    page = (tmp_path / "report.html").read_text()
    assert "<h1>ClipCap vs ClipCap + EIM (the headline comparison): 3 seeds</h1>" in page
    assert "spec names" not in page and "items only" not in page
    row = next(line for line in page.splitlines() if "eim − clipcap" in line)
    assert "class='pos'" in row


def test_the_selection_line_prints_points_like_the_tables(tmp_path):
    write_study_report(tmp_path, _study(3, 3, 3))
    line = next(x for x in (tmp_path / "report.html").read_text().splitlines() if x.startswith("<li>eim"))
    assert "CIDEr (points)" in line and "76.63" in line and "74.10" in line and "76.6300" not in line
    assert "chosen <b>stages.base_ie.losses.ie = 1.0</b>" in line
