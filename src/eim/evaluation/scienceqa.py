"""ScienceQA accuracy by category (docs/design.md §6), on generated "The answer is X." texts.

Library use (no files)::

    from eim.evaluation.scienceqa import score_scienceqa
    score_scienceqa(problems, {"4": "The answer is B. BECAUSE: ..."}, qids=["4"])
    # {"NAT": 100.0, "SOC": None, ..., "Avg": 100.0, "n": 1, "unparsed": 0}

From files::

    eim score scienceqa --problems problems.json --pred predictions.json --split test [--json]

The letter is taken with LLaMA-Adapter/LaVIN's regex ``The answer is ([A-Z]).``; as there, a text
matching it zero or several times fails to parse. Unlike their scripts, which then guess a random
choice, a failed parse (or a letter beyond the problem's choices) counts as wrong and is reported
in ``unparsed`` — scores are deterministic and a model is not credited for luck.
"""

import re
from pathlib import Path

from eim.errors import DataError
from eim.evaluation.coco import skipped_note, load_json, skipped_list

ANSWER_RE = re.compile(r"The answer is ([A-Z]).")
OPTIONS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Reported columns, in the order of the ScienceQA paper's table.
CATEGORIES = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
GRADES_1_6 = {f"grade{g}" for g in range(1, 7)}
GRADES_7_12 = {f"grade{g}" for g in range(7, 13)}
_SHOWN_IDS = 5  # how many offending qids an error message lists


def extract_answer(text):
    """The answer letter of a generated text, or None when it does not say it exactly once."""
    found = ANSWER_RE.findall(text)
    return found[0] if len(found) == 1 else None


def problem_categories(problem):
    """The docs/design.md §6 categories a ScienceQA problem counts in (TXT and IMG may both apply).

    TXT/IMG/NO follow the official scorer: a truthy ``hint`` / ``image`` field.
    """
    cats = []
    if problem.get("subject") in SUBJECTS:
        cats.append(SUBJECTS[problem["subject"]])
    has_text, has_image = bool(problem.get("hint")), bool(problem.get("image"))
    if has_text:
        cats.append("TXT")
    if has_image:
        cats.append("IMG")
    if not has_text and not has_image:
        cats.append("NO")
    grade = problem.get("grade")
    if grade in GRADES_1_6:
        cats.append("G1-6")
    elif grade in GRADES_7_12:
        cats.append("G7-12")
    return cats


def _few(ids):
    ids = sorted(map(str, ids))
    more = f", ... ({len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
    return ", ".join(ids[:_SHOWN_IDS]) + more


def score_scienceqa(problems, predictions, qids, *, pred_file=None, skipped=None, per_image=False):
    """Accuracy in percent per category, and overall, on the problems ``qids`` (docs/design.md §6).

    problems: {qid: problem} as in problems.json (needs choices, answer, hint, image, grade,
    subject). predictions: {qid: generated text}; qids outside ``qids`` are ignored. skipped:
    problems a loader skipped as bad (``{qid: reason}``, ``(qid, reason)`` pairs or qids): not
    scored, and listed in ``"skipped"`` (those among ``qids``).
    Returns {"NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg": percent or None
    for an empty category, "n": problems scored, "unparsed": texts without a usable letter}.
    per_image: also return ``"per_image": {"ids": qids, "stats": [[right, right and IMG, IMG], ...]}``
    (1.0 / 0.0 each) per problem, what Avg and IMG are sums of (:mod:`eim.evaluation.intervals`).
    """
    qids = [str(q) for q in qids]
    predictions = {str(k): v for k, v in predictions.items()}
    listed = None
    if skipped is not None:
        reasons = {str(x["id"]): x["reason"] for x in skipped_list(skipped)}
        listed = [{"id": q, "reason": reasons[q]} for q in qids if q in reasons]
        if qids and len(listed) == len(qids):
            raise DataError(f"all {len(qids)} problems of the split were skipped as bad records",
                            file=pred_file, remedy="run `eim data check` and fix the data")
        qids = [q for q in qids if q not in reasons]
    if not qids:
        raise DataError("the split has no problems", file=pred_file)
    unknown = [q for q in qids if q not in problems]
    if unknown:
        raise DataError(f"{len(unknown)} qids of the split are not in problems.json "
                        f"(e.g. {_few(unknown)})", remedy="use the pid_splits.json that "
                        "came with this problems.json")
    missing = [q for q in qids if q not in predictions]
    if missing:
        raise DataError(f"{len(missing)} of {len(qids)} problems of the split have no prediction "
                        f"(e.g. {_few(missing)})", file=pred_file,
                        remedy="predict every problem of the chosen split (`eim score scienceqa "
                        "--exclude QID,...` leaves out problems skipped as bad records)")
    correct = {c: 0 for c in CATEGORIES + ("Avg",)}
    total = dict.fromkeys(correct, 0)
    unparsed, rights = 0, []
    for qid in qids:
        problem, text = problems[qid], predictions[qid]
        if not isinstance(text, str):
            raise DataError(f"prediction is {type(text).__name__}, not the generated text",
                            file=pred_file, record=qid)
        letter = extract_answer(text)
        n_choices = len(problem["choices"])
        if letter is None or OPTIONS.index(letter) >= n_choices:
            unparsed += 1
            right = False
        else:
            right = OPTIONS.index(letter) == problem["answer"]
        cats = problem_categories(problem)
        img = "IMG" in cats
        rights.append([float(right), float(right and img), float(img)])
        for cat in cats + ["Avg"]:
            total[cat] += 1
            correct[cat] += right
    out = {c: (100.0 * correct[c] / total[c] if total[c] else None) for c in correct}
    out.update(n=len(qids), unparsed=unparsed)
    if per_image:
        out["per_image"] = {"ids": qids, "stats": rights}
    if listed is not None:
        out["skipped"] = listed
    return out


def load_split_qids(problems_path, split="test", splits_path=None):
    """The qids of ``split`` from pid_splits.json (default: next to problems.json, docs/design.md §5)."""
    if splits_path is None:
        splits_path = Path(problems_path).parent / "pid_splits.json"
    splits_path = Path(splits_path)
    if not splits_path.is_file():
        raise DataError("split file not found", file=splits_path,
                        remedy="put ScienceQA's pid_splits.json next to problems.json or pass "
                        "--splits FILE")
    splits = load_json(splits_path, "pid_splits")
    if not isinstance(splits, dict) or split not in splits:
        names = ", ".join(splits) if isinstance(splits, dict) else "none"
        raise DataError(f"no split {split!r} (splits present: {names})", file=splits_path)
    return [str(q) for q in splits[split]]


def score_scienceqa_files(problems_path, pred_path, split="test", splits_path=None, skipped=None, per_image=False):
    """:func:`score_scienceqa` on problems.json, a {qid: text} predictions file and a split;
    ``skipped`` as there."""
    problems = load_json(problems_path, "problems")
    if not isinstance(problems, dict):
        raise DataError("expected {qid: problem} (ScienceQA problems.json)", file=problems_path)
    for qid, p in problems.items():
        if not isinstance(p, dict) or "choices" not in p or "answer" not in p:
            raise DataError('problem needs "choices" and "answer"', file=problems_path, record=qid)
    predictions = load_json(pred_path, "predictions")
    if not isinstance(predictions, dict):
        raise DataError('expected {qid: "generated text"}', file=pred_path)
    qids = load_split_qids(problems_path, split, splits_path)
    result = score_scienceqa(problems, predictions, qids, pred_file=pred_path, skipped=skipped, per_image=per_image)
    result["split"] = split
    return result


def format_scienceqa(result):
    """Aligned text table of a :func:`score_scienceqa` result."""
    cols = CATEGORIES + ("Avg",)
    cells = ["n/a" if result[c] is None else f"{result[c]:.2f}" for c in cols]
    widths = [max(len(c), len(v)) for c, v in zip(cols, cells)]
    title = f"ScienceQA: {result['n']} problems scored" + skipped_note(result) + (
        f", split {result['split']}" if "split" in result else "")
    return "\n".join([
        title,
        "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths)),
        "  " + "  ".join(v.rjust(w) for v, w in zip(cells, widths)),
        f"  unparsed answers (counted wrong): {result['unparsed']}",
    ])


__all__ = ["ANSWER_RE", "CATEGORIES", "extract_answer", "problem_categories", "score_scienceqa",
           "load_split_qids", "score_scienceqa_files", "format_scienceqa"]
