"""`eim score mme` and eim.evaluation.mme against hand-computed values (docs/design.md §6, MME's
official eval_tool/calculation.py)."""

import json

import pytest

from eim.cli import main
from eim.errors import DataError
from eim.evaluation.mme import PERCEPTION, SUBTASKS, parse_yes_no, score_mme, score_mme_dir

RESULTS = {
    # image 1 both right; image 2: "yes, no" ties to yes (right), then "Yes" wrong;
    # image 3: "I cannot tell" is other (wrong), "no yes" is no (right).
    # acc 4/6, acc+ 1/3 -> score 100.0; 1 other.
    "existence": [
        ("1.jpg", "Is there a dog?", "Yes", "Yes"),
        ("1.jpg", "Is there a cat?", "No", "No, there is not."),
        ("2.jpg", "Is there a car?", "Yes", "yes, no"),
        ("2.jpg", "Is there a bus?", "No", "Yes"),
        ("3.jpg", "Is there a man?", "Yes", "I cannot tell"),
        ("3.jpg", "Is there a boy?", "No", "no yes"),
    ],
    # " yes" has yes in its first 4 chars, "   yes" does not (other); "Not at all" is no.
    # acc 3/4, acc+ 1/2 -> score 125.0; 1 other.
    "count": [
        ("a.jpg", "Two dogs?", "Yes", " yes"),
        ("a.jpg", "Three dogs?", "No", "Not at all"),
        ("b.jpg", "One cat?", "Yes", "   yes"),
        ("b.jpg", "Two cats?", "No", "NO"),
    ],
    # acc 1/2, acc+ 0 -> score 50.0.
    "code_reasoning": [
        ("c.png", "Does it print 3?", "Yes", "Yes"),
        ("c.png", "Does it print 4?", "No", "Yes"),
    ],
}


def write_results(folder, results):
    folder.mkdir(exist_ok=True)
    for name, rows in results.items():
        (folder / f"{name}.txt").write_text("".join("\t".join(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("pred,label", [
    ("Yes", "yes"), ("no", "no"), ("Yes, there is.", "yes"), ("No.", "no"), ("yes, no", "yes"),
    ("no yes", "no"), ("None", "no"), ("I think yes", "other"), ("", "other"), (" yes", "yes"),
    ("   yes", "other")])
def test_parse_yes_no_like_official(pred, label):
    assert parse_yes_no(pred) == label


def test_scores_match_hand_computed(tmp_path):
    result = score_mme_dir(write_results(tmp_path / "res", RESULTS))
    subtasks = result["subtasks"]
    assert list(subtasks) == ["existence", "count", "code_reasoning"]  # official order
    assert subtasks["existence"] == pytest.approx(
        {"acc": 4 / 6, "acc_plus": 1 / 3, "score": 100.0, "images": 3, "other": 1})
    assert subtasks["count"] == pytest.approx(
        {"acc": 0.75, "acc_plus": 0.5, "score": 125.0, "images": 2, "other": 1})
    assert subtasks["code_reasoning"] == pytest.approx(
        {"acc": 0.5, "acc_plus": 0.0, "score": 50.0, "images": 1, "other": 0})
    assert result["perception"] == pytest.approx(225.0)
    assert result["cognition"] == pytest.approx(50.0)
    assert result["missing"] == [n for n in SUBTASKS if n not in RESULTS]


def test_group_without_subtasks_is_none():
    result = score_mme({"code_reasoning": RESULTS["code_reasoning"]})
    assert result["perception"] is None and result["cognition"] == 50.0
    assert result["missing"][: len(PERCEPTION)] == list(PERCEPTION)


@pytest.mark.parametrize("rows,message", [
    (RESULTS["code_reasoning"][:1], "1 result lines, expected two per image"),
    ([RESULTS["count"][0], RESULTS["count"][2]], "different images"),
    ([("x", "q", "Maybe", "Yes"), ("x", "q", "No", "No")], "not Yes/No"),
])
def test_bad_results_are_errors(rows, message):
    with pytest.raises(DataError, match=message):
        score_mme({"color": rows})


def test_unknown_file_name_is_an_error(tmp_path):
    folder = write_results(tmp_path / "res", {"ocr": RESULTS["code_reasoning"]})
    with pytest.raises(DataError, match="ocr.txt"):
        score_mme_dir(folder)


def test_cli_json_and_table(tmp_path, capsys):
    folder = write_results(tmp_path / "res", RESULTS)
    assert main(["score", "mme", "--results", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"perception", "cognition", "subtasks", "missing"}
    assert out["perception"] == pytest.approx(225.0) and out["cognition"] == pytest.approx(50.0)
    assert main(["score", "mme", "--results", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "MME perception: 225.00 (2/10 subtasks, max 2000)" in table
    assert "existence" in table and "missing subtasks: position" in table


def test_cli_missing_folder_exits_2(tmp_path, capsys):
    assert main(["score", "mme", "--results", str(tmp_path / "nope")]) == 2
    assert "MME results folder not found" in capsys.readouterr().err


def test_per_image_stats_give_back_accuracy_and_accuracy_plus(tmp_path):
    """What paired MME intervals resample: one row per image; within a subtask their means are the
    scorer's acc and acc+ (hand values above), pooled over all images they are the totals."""
    from eim.evaluation.intervals import MME_METRICS, paired_interval

    write_results(tmp_path, RESULTS)
    res = score_mme_dir(tmp_path, per_image=True)
    per = res["per_image"]
    assert per["ids"][:3] == ["existence/1.jpg", "existence/2.jpg", "existence/3.jpg"]
    ex = per["stats"][:3]
    assert sum(r[0] for r in ex) / 3 == pytest.approx(4 / 6) and sum(r[1] for r in ex) / 3 == pytest.approx(1 / 3)
    assert len(per["stats"]) == 6  # 3 + 2 + 1 images
    assert sum(r[0] for r in per["stats"]) / 6 == pytest.approx((4 + 3 + 1) / 12)
    same = paired_interval([per["stats"]], [per["stats"]], MME_METRICS["accuracy_plus"], n_boot=50)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0]
