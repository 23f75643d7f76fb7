"""`eim score scienceqa` and eim.evaluation.scienceqa against hand-computed values (docs/design.md §6)."""

import json

import pytest

from eim.cli import main
from eim.errors import DataError
from eim.evaluation.scienceqa import (
    extract_answer,
    format_scienceqa,
    problem_categories,
    score_scienceqa,
    score_scienceqa_files,
)


def prob(subject, hint, image, grade, answer, n_choices):
    return {"question": "?", "choices": [f"c{i}" for i in range(n_choices)], "answer": answer,
            "hint": hint, "image": image, "grade": grade, "subject": subject, "split": "test"}


NAT, SOC, LAN = "natural science", "social science", "language science"
PROBLEMS = {
    "1": prob(NAT, "", "image.png", "grade2", 0, 2),    # NAT IMG G1-6   right
    "2": prob(SOC, "A map.", None, "grade8", 1, 3),     # SOC TXT G7-12  wrong letter
    "3": prob(LAN, "", None, "grade5", 2, 3),           # LAN NO G1-6    right
    "4": prob(NAT, "Text.", "image.png", "grade10", 1, 2),  # NAT TXT+IMG G7-12  unparsed
    "5": prob(NAT, "", None, "grade7", 0, 2),           # NAT NO G7-12   said twice: unparsed
    "6": prob(SOC, "", "image.png", "grade3", 1, 2),    # SOC IMG G1-6   letter beyond choices
    "7": prob(NAT, "Text.", None, "grade1", 1, 4),      # NAT TXT G1-6   right
    "8": prob(LAN, "", None, "grade4", 0, 2),           # train only: not scored
}
PREDICTIONS = {
    "1": "The answer is A. BECAUSE: dogs are mammals.",
    "2": "The answer is A.",
    "3": "The answer is C. BECAUSE: a verb.",
    "4": "I think it is B",
    "5": "The answer is A. The answer is A.",
    "6": "The answer is C.",
    "7": "Looking at it... The answer is B. BECAUSE: x",
    "8": "The answer is B.",
}
SPLITS = {"train": ["8"], "test": ["1", "2", "3", "4", "5", "6", "7"], "minitest": ["1", "3"]}
# Hand-computed from the comments above: right = 1, 3, 7.
EXPECTED = {"NAT": 50.0, "SOC": 0.0, "LAN": 100.0, "TXT": 100 / 3, "IMG": 100 / 3, "NO": 50.0,
            "G1-6": 75.0, "G7-12": 0.0, "Avg": 300 / 7, "n": 7, "unparsed": 3}


@pytest.fixture
def files(tmp_path):
    for name, data in (("problems.json", PROBLEMS), ("pid_splits.json", SPLITS),
                       ("pred.json", PREDICTIONS)):
        (tmp_path / name).write_text(json.dumps(data))
    return tmp_path


def test_extract_answer_follows_lavin_regex():
    assert extract_answer("The answer is B. BECAUSE: ...") == "B"
    assert extract_answer("the answer is B.") is None  # case-sensitive, as LaVIN
    assert extract_answer("The answer is B") is None  # the regex needs one more character
    assert extract_answer("The answer is A. The answer is B.") is None  # several: failed


def test_categories_overlap_txt_and_img():
    assert problem_categories(PROBLEMS["4"]) == ["NAT", "TXT", "IMG", "G7-12"]
    assert problem_categories(PROBLEMS["3"]) == ["LAN", "NO", "G1-6"]


def test_scores_match_hand_computed():
    result = score_scienceqa(PROBLEMS, PREDICTIONS, SPLITS["test"])
    assert result == pytest.approx(EXPECTED)
    assert list(result) == ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg", "n",
                            "unparsed"]


def test_per_problem_stats_give_back_avg_and_img():
    """What paired intervals resample: one row per problem, its sums give the scorer's Avg and IMG."""
    import numpy as np

    from eim.evaluation.intervals import SCIENCEQA_METRICS

    result = score_scienceqa(PROBLEMS, PREDICTIONS, SPLITS["test"], per_image=True)
    stats = np.array(result["per_image"]["stats"])
    assert result["per_image"]["ids"] == SPLITS["test"] and stats.shape == (7, 3)
    for m in ("Avg", "IMG"):
        assert 100 * SCIENCEQA_METRICS[m](stats.sum(0), len(stats)) == pytest.approx(EXPECTED[m])


def test_empty_category_is_none_not_zero():
    result = score_scienceqa(PROBLEMS, PREDICTIONS, SPLITS["minitest"])
    assert result["SOC"] is None and result["TXT"] is None and result["G7-12"] is None
    assert result["Avg"] == 100.0 and result["n"] == 2


def test_missing_qids_is_an_error(files):
    preds = {k: v for k, v in PREDICTIONS.items() if k not in ("3", "5")}
    (files / "pred.json").write_text(json.dumps(preds))
    with pytest.raises(DataError, match=r"2 of 7 problems .* no prediction \(e.g. 3, 5\)"):
        score_scienceqa_files(files / "problems.json", files / "pred.json")


def test_splits_file_option_and_unknown_split(files):
    other = files / "sub" / "splits.json"
    other.parent.mkdir()
    other.write_text(json.dumps({"mini": ["7"]}))
    assert score_scienceqa_files(files / "problems.json", files / "pred.json", "mini",
                                 other)["Avg"] == 100.0
    with pytest.raises(DataError, match="no split 'val'"):
        score_scienceqa_files(files / "problems.json", files / "pred.json", "val")


def test_cli_json_and_table(files, capsys):
    argv = ["score", "scienceqa", "--problems", str(files / "problems.json"),
            "--pred", str(files / "pred.json")]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == pytest.approx({**EXPECTED, "split": "test"})
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "G7-12" in table and "42.86" in table and "unparsed answers (counted wrong): 3" in table
    assert format_scienceqa(out) == table.rstrip("\n")


def test_cli_missing_splits_file_exits_2(files, capsys):
    (files / "pid_splits.json").unlink()
    assert main(["score", "scienceqa", "--problems", str(files / "problems.json"),
                 "--pred", str(files / "pred.json")]) == 2
    assert "--splits" in capsys.readouterr().err


def test_skipped_problems_are_not_scored_and_are_listed(files, capsys):
    # problem 2 (wrong) skipped as a bad record, and 8 (train: not in the split, not listed)
    result = score_scienceqa(PROBLEMS, {k: v for k, v in PREDICTIONS.items() if k != "2"}, SPLITS["test"],
                             skipped=[("2", "cannot decode image x"), ("8", "empty question")])
    assert result["n"] == 6 and result["Avg"] == pytest.approx(50.0) and result["SOC"] == 0.0
    assert result["skipped"] == [{"id": "2", "reason": "cannot decode image x"}]
    assert format_scienceqa(result).startswith("ScienceQA: 6 problems scored (1 bad record skipped: 2)")
    with pytest.raises(DataError, match="all 2 problems of the split were skipped"):
        score_scienceqa(PROBLEMS, PREDICTIONS, SPLITS["minitest"], skipped=["1", "3"])
    assert main(["score", "scienceqa", "--problems", str(files / "problems.json"), "--pred",
                 str(files / "pred.json"), "--exclude", "2,4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 5 and [s["id"] for s in out["skipped"]] == ["2", "4"]
