"""MME scores, computed exactly as MME's official ``eval_tool/calculation.py`` (docs/design.md §6).

Results layout (the official tool's): ``DIR/<subtask>.txt`` with lines
``image<TAB>question<TAB>gt<TAB>prediction``, the two questions of an image on consecutive lines.

    eim score mme --results DIR [--json]

Library use (no files)::

    from eim.evaluation.mme import score_mme
    score_mme({"color": [("a.jpg", "Is it red?", "Yes", "Yes"),
                         ("a.jpg", "Is it blue?", "No", "No")]})
    # {"perception": 200.0, "cognition": None, "subtasks": {"color": {...}}, "missing": [...]}

Per subtask: acc = right questions / questions, acc+ = images with both questions right / images,
score = 100·acc + 100·acc+ (max 200). Perception and cognition sum the subtasks present (None when
none is), and ``missing`` lists the official subtasks without a results file.
"""

from pathlib import Path

from eim.errors import DataError
from eim.evaluation.coco import skipped_note, skipped_list

# MME's official subtask (folder and results-file) names.
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
             "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION


def parse_yes_no(prediction):
    """"yes", "no" or "other", as the official parse_pred_ans: lowercase, then look in the first
    4 characters for "yes" before "no" (so "Not sure" is "no" and " yes" is "yes")."""
    pred = prediction.lower()
    if pred in ("yes", "no"):
        return pred
    head = pred[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def image_pairs(rows, *, name="subtask", file=None):
    """``[(image, right answers 0-2, unparsed answers)]``, one per image; rows: [(image, question,
    gt, prediction), ...] pairing up in order (official ``divide_chunks``: rows 2i and 2i+1 are one
    image's two questions). Bad rows raise :class:`DataError` naming the line."""
    if not rows:
        raise DataError(f"{name}: no results", file=file)
    if len(rows) % 2:
        raise DataError(f"{name}: {len(rows)} result lines, expected two per image", file=file,
                        remedy="write both questions of every image on consecutive lines")
    out = []
    for i in range(0, len(rows), 2):
        pair = rows[i:i + 2]
        if pair[0][0] != pair[1][0]:
            raise DataError(f"lines {i + 1} and {i + 2} are about different images "
                            f"({pair[0][0]!r}, {pair[1][0]!r})", file=file,
                            remedy="write both questions of every image on consecutive lines")
        right = other = 0
        for j, (_image, _question, gt, pred) in enumerate(pair):
            gt = gt.strip().lower()
            if gt not in ("yes", "no"):
                raise DataError(f"line {i + j + 1}: ground truth {gt!r} is not Yes/No", file=file)
            label = parse_yes_no(pred)
            other += label == "other"
            right += label == gt
        out.append((pair[0][0], right, other))
    return out


def score_subtask(rows, *, name="subtask", file=None):
    """acc, acc_plus, score for one subtask; rows as for :func:`image_pairs`.
    Returns {"acc", "acc_plus" (0-1), "score" (0-200), "images", "other"}."""
    pairs = image_pairs(rows, name=name, file=file)
    acc = sum(r for _, r, _ in pairs) / len(rows)
    acc_plus = sum(r == 2 for _, r, _ in pairs) / len(pairs)
    return {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus,
            "images": len(pairs), "other": sum(o for _, _, o in pairs)}


def score_mme(subtasks, *, files=None):
    """Perception/cognition totals over the subtasks given (docs/design.md §6).

    subtasks: {official name: rows as for :func:`score_subtask`}. Returns {"perception",
    "cognition": summed scores or None when no subtask of the group is present, "subtasks":
    {name: score_subtask(...)} in official order, "missing": official names not given}.
    """
    unknown = sorted(set(subtasks) - set(SUBTASKS))
    if unknown:
        raise DataError(f"unknown MME subtask(s) {', '.join(unknown)}",
                        remedy=f"use the official names: {', '.join(SUBTASKS)}")
    if not subtasks:
        raise DataError("no MME subtask results", remedy=f"expected <subtask>.txt files named "
                        f"after the official subtasks: {', '.join(SUBTASKS)}")
    files = files or {}
    scores = {name: score_subtask(subtasks[name], name=name, file=files.get(name))
              for name in SUBTASKS if name in subtasks}

    def total(group):
        present = [scores[n]["score"] for n in group if n in scores]
        return float(sum(present)) if present else None

    return {"perception": total(PERCEPTION), "cognition": total(COGNITION), "subtasks": scores,
            "missing": [n for n in SUBTASKS if n not in scores]}


def overall_accuracy(result):
    """-> (accuracy, accuracy+) over every image of :func:`score_mme`'s subtasks, each subtask
    weighted by its images (fractions; what the per-image statistics' intervals estimate)."""
    subs = result.get("subtasks", {}).values()
    images = sum(s["images"] for s in subs) or 1
    return (sum(s["acc"] * s["images"] for s in subs) / images,
            sum(s["acc_plus"] * s["images"] for s in subs) / images)


def flat_scores(result):
    """:func:`score_mme`'s result as one flat dict, what the demos and studies tabulate:
    ``perception``; each subtask's ``score`` (points, max 200) under its name and its accuracy (%)
    as ``<name>_acc``; ``mme_acc`` / ``mme_acc_plus`` over every image (%, :func:`overall_accuracy`);
    ``mme_other``, the answers that were neither yes nor no."""
    subs = result.get("subtasks", {})
    out = {"perception": result.get("perception")}
    for name, st in subs.items():
        out[name], out[f"{name}_acc"] = st["score"], 100 * st["acc"]
    if subs:
        acc, acc_plus = overall_accuracy(result)
        out["mme_acc"], out["mme_acc_plus"] = 100 * acc, 100 * acc_plus
    out["mme_other"] = sum(st.get("other", 0) for st in subs.values())
    return out


def read_results_file(path):
    """[(image, question, gt, prediction), ...] from one official-layout ``<subtask>.txt``."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")  # only the line end: " yes" parses differently from "yes"
            if not line.strip():
                continue
            fields = line.split("\t", 3)
            if len(fields) != 4:
                raise DataError(f"line {n}: expected image<TAB>question<TAB>gt<TAB>prediction, "
                                f"got {len(fields)} field(s)", file=path)
            rows.append(tuple(fields))
    return rows


def per_image_stats(subtasks):
    """``{"ids": ["subtask/image"], "stats": [[right / 2, both right]], "features"}`` per image, for
    paired intervals (docs/design.md §11): their means are MME's accuracy and accuracy+ pooled over
    the subtasks (each subtask's score is 100 times the two over its own images)."""
    ids, stats = [], []
    for name in SUBTASKS:
        for image, right, _ in (image_pairs(subtasks[name], name=name) if subtasks.get(name) else ()):
            ids.append(f"{name}/{image}")
            stats.append([right / 2, float(right == 2)])
    return {"ids": ids, "stats": stats, "features": ["accuracy", "accuracy_plus"]}


def score_mme_dir(results_dir, skipped=None, per_image=False):
    """:func:`score_mme` on a results folder of official ``<subtask>.txt`` files.

    skipped: images the loader skipped as bad (``{"subtask/image": reason}``, pairs or ids); they
    have no result lines, so they are not scored, and are listed in ``"skipped"``. per_image: add
    :func:`per_image_stats` as ``"per_image"``."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError("MME results folder not found", file=results_dir)
    paths = {p.stem: p for p in sorted(results_dir.glob("*.txt"))}
    unknown = sorted(set(paths) - set(SUBTASKS))
    if unknown:
        raise DataError(f"files not named after an official MME subtask: "
                        f"{', '.join(paths[n].name for n in unknown)}", file=results_dir,
                        remedy=f"name them <subtask>.txt with one of: {', '.join(SUBTASKS)}")
    if not paths:
        raise DataError("no <subtask>.txt result files", file=results_dir,
                        remedy=f"expected files named after the official subtasks: "
                        f"{', '.join(SUBTASKS)}")
    rows = {n: read_results_file(p) for n, p in paths.items()}
    result = score_mme(rows, files=paths)
    if per_image:
        result["per_image"] = per_image_stats(rows)
    if skipped is not None:
        result["skipped"] = skipped_list(skipped)
    return result


def format_mme(result):
    """Aligned text table of a :func:`score_mme` result (acc and acc+ in percent)."""
    width = max(max(map(len, result["subtasks"]), default=0), len("subtask"))
    images = sum(s["images"] for s in result["subtasks"].values())
    lines = [f"MME: {images} images scored" + skipped_note(result),
             f"  {'subtask':<{width}}  {'acc':>6}  {'acc+':>6}  {'score':>6}"]
    for name, s in result["subtasks"].items():
        lines.append(f"  {name:<{width}}  {100 * s['acc']:6.2f}  {100 * s['acc_plus']:6.2f}  "
                     f"{s['score']:6.2f}" + (f"  ({s['other']} not yes/no)" if s["other"] else ""))
    for group, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
        value = result[group]
        n = sum(name in result["subtasks"] for name in names)
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"MME {group}: {shown} ({n}/{len(names)} subtasks, max {200 * len(names)})")
    if result["missing"]:
        lines.append(f"missing subtasks: {', '.join(result['missing'])}")
    return "\n".join(lines)


__all__ = ["PERCEPTION", "COGNITION", "SUBTASKS", "parse_yes_no", "score_subtask", "score_mme",
           "read_results_file", "score_mme_dir", "format_mme", "per_image_stats"]
