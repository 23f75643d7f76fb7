"""COCO caption scoring with pycocoevalcap (docs/design.md §6: PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L,
CIDEr; SPICE reported as unavailable, never as zero, when it cannot run).

Library use (no files)::

    from eim.evaluation.coco import score_captions
    score_captions({1: ["a dog on a mat", "a brown dog"]}, {1: "a dog lying on a mat"})
    # {"Bleu_1": 0.83, ..., "CIDEr": 0.0, "SPICE": None, "n_images": 1,
    #  "unavailable": {"SPICE": "..."}}

From files (Karpathy ``dataset_coco.json`` + a standard COCO results list)::

    eim score coco --gt dataset_coco.json --pred results.json --split test [--json]

Metric keys are pycocoevalcap's own names with its raw 0-1 values; the CLI table shows percent.
Java runs the PTB tokenizer and METEOR, so a missing ``java`` is an error, not a silent switch to
another tokenizer (scores would no longer be comparable with published numbers).
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from eim.errors import DataError, EIMError

# pycocoevalcap's metric names, in the order papers report them.
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
# Karpathy split names accepted by --split; "train" also takes "restval" (docs/design.md §5).
SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",),
          "restval": ("restval",), "all": ("train", "restval", "val", "test")}
JAVA_INSTALL_HINT = ("install a Java runtime (e.g. `apt-get install openjdk-17-jre-headless`) "
                     "and make sure `java` is on PATH")
# What SPICE needs besides its own jar; pycocoevalcap downloads it on first use.
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
_SHOWN_IDS = 5  # how many offending ids an error message lists


class JavaNotFoundError(EIMError):
    """``java`` is not on PATH; pycocoevalcap's PTB tokenizer and METEOR cannot run."""


def require_java():
    """Raise :class:`JavaNotFoundError` with an install hint when ``java`` is not on PATH."""
    if shutil.which("java") is None:
        raise JavaNotFoundError(
            "COCO caption metrics need Java (pycocoevalcap runs the Stanford PTB tokenizer and "
            f"METEOR in it) but `java` was not found on PATH; {JAVA_INSTALL_HINT}")


def spice_unavailable_reason():
    """One line saying why SPICE cannot run here, or None when its CoreNLP jars are installed.

    Only checks files: pycocoevalcap would otherwise start a network download that hangs offline.
    """
    import pycocoevalcap.spice as spice_pkg  # optional scorer: only its folder is read here

    lib = Path(spice_pkg.__file__).parent / "lib"
    missing = [jar for jar in CORENLP_JARS if not (lib / jar).is_file()]
    if missing:
        return (f"Stanford CoreNLP 3.6.0 is not installed in {lib} ({', '.join(missing)} missing); "
                "pycocoevalcap downloads it on first use, which needs internet: run `python -c "
                "'from pycocoevalcap.spice.get_stanford_models import get_stanford_models as g; "
                "g()'` once online")
    return None


def _few(ids):
    ids = sorted(ids, key=str)
    more = f", ... ({len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
    return ", ".join(map(str, ids[:_SHOWN_IDS])) + more


def check_coverage(expected, predicted, *, file=None, what="image"):
    """Raise :class:`DataError` unless ``predicted`` ids are exactly the ``expected`` ones."""
    expected, predicted = set(expected), set(predicted)
    missing, extra = expected - predicted, predicted - expected
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} {what}s of the split have no "
                        f"prediction (e.g. {_few(missing)})")
    if extra:
        problems.append(f"{len(extra)} predicted {what}s are not in the split "
                        f"(e.g. {_few(extra)})")
    if problems:
        raise DataError("; ".join(problems), file=file,
                        remedy="predict every image of the chosen --split and nothing else (`eim score "
                        "coco --exclude ID,...` leaves out images skipped as bad records)")


def ptb_tokenize(gts, res):
    """PTB-tokenize references and predictions in one Java call, as pycocoevalcap's COCOEvalCap.

    gts: {id: [ref, ...]}, res: {id: caption} -> ({id: [tokenized refs]}, {id: [tokenized caption]})
    Lowercased, punctuation removed (pycocoevalcap's PUNCTUATIONS).
    """
    require_java()
    both = {("gt", k): [{"caption": c} for c in refs] for k, refs in gts.items()}
    both.update({("res", k): [{"caption": c}] for k, c in res.items()})
    tokens = PTBTokenizer().tokenize(both)
    if len(tokens) != len(both):  # the tokenizer's Java process failed and printed nothing
        raise EIMError("the PTB tokenizer (Java) produced no output for some captions; "
                       "check that `java -version` works")
    return ({k: tokens[("gt", k)] for k in gts}, {k: tokens[("res", k)] for k in res})


def _run_spice(gts_tok, res_tok):
    """SPICE F-score, or (None, reason) when the scorer fails (it is fragile outside Java 8)."""
    from pycocoevalcap.spice.spice import Spice  # optional scorer (needs CoreNLP jars)

    try:
        score, _ = Spice().compute_score(gts_tok, res_tok)
    except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as e:
        return None, f"the SPICE scorer failed: {type(e).__name__}: {e}".splitlines()[0]
    return float(score), None


def image_statistics(gts_tok, res_tok, cider, rouge):
    """Per-image statistics the corpus scores are functions of (:mod:`eim.evaluation.intervals`):
    ``[n, 12]`` rows in ``gts_tok`` order = BLEU's n-gram matches and counts (n = 1..4), test
    length and closest reference length, as pycocoevalcap's BleuScorer cooks them, then the
    image's CIDEr-D and ROUGE-L (pycocoevalcap's per-image scores)."""
    scorer = BleuScorer(n=4)
    for k in gts_tok:
        scorer += (res_tok[k][0], gts_tok[k])
    rows = []
    for comps, c, r in zip(scorer.ctest, cider, rouge, strict=True):
        reflen = scorer._single_reflen(comps["reflen"], "closest", comps["testlen"])
        rows.append(list(comps["correct"]) + list(comps["guess"]) + [comps["testlen"], reflen, float(c), float(r)])
    return rows


def score_captions(gts, res, *, spice=None, timings=None, per_image=False, meteor=True):
    """Score captions with pycocoevalcap after PTB tokenization (docs/design.md §6).

    gts: {image_id: [reference, ...]} (raw strings), res: {image_id: caption} (raw string); the
    two must have the same ids. spice: None = run SPICE only when its CoreNLP jars are installed,
    True = require it, False = skip it. timings: optional dict filled with seconds per stage.
    per_image: also return ``"per_image": {"ids": [...], "stats": [[...12 floats], ...]}``
    (:func:`image_statistics`). meteor: False skips METEOR (null, with the reason).
    Returns {metric: float | None for METRICS, "n_images": int, "unavailable": {metric: reason}}.
    """
    check_coverage(gts, res)
    if not gts:
        raise DataError("no images to score")
    for k, refs in gts.items():
        if not refs or not all(isinstance(r, str) for r in refs):
            raise DataError("references must be a non-empty list of strings", record=k)
        if not isinstance(res[k], str):
            raise DataError(f"caption must be a string, got {type(res[k]).__name__}", record=k)
    timings = {} if timings is None else timings
    unavailable = {}
    spice_reason = "disabled (spice=False)" if spice is False else spice_unavailable_reason()
    if spice_reason and spice is True:
        raise EIMError(f"SPICE was requested but cannot run: {spice_reason}")

    require_java()
    # METEOR's Java process spends ~8 s loading its paraphrase table: start it first so that
    # loading overlaps tokenization, BLEU, ROUGE-L and CIDEr (its timing is the remaining wait).
    scorers = [("Bleu", Bleu(4), {"verbose": 0}), ("ROUGE_L", Rouge(), {}), ("CIDEr", Cider(), {})]
    if meteor:
        scorers.append(("METEOR", Meteor(), {}))
    else:
        unavailable["METEOR"] = "disabled (meteor=False)"
    t = time.perf_counter()
    gts_tok, res_tok = ptb_tokenize(gts, res)
    timings["tokenize"] = time.perf_counter() - t

    out, per = {"METEOR": None}, {}
    for name, scorer, kwargs in scorers:
        t = time.perf_counter()
        score, per[name] = scorer.compute_score(gts_tok, res_tok, **kwargs)
        timings[name] = time.perf_counter() - t
        if name == "Bleu":
            out.update({f"Bleu_{n + 1}": float(s) for n, s in enumerate(score)})
        else:
            out[name] = float(score)
    del scorers, scorer  # Meteor's __del__ stops its Java process

    out["SPICE"] = None
    if spice_reason is None:
        t = time.perf_counter()
        out["SPICE"], spice_reason = _run_spice(gts_tok, res_tok)
        timings["SPICE"] = time.perf_counter() - t
        if spice_reason and spice is True:
            raise EIMError(f"SPICE was requested but {spice_reason}")
    if spice_reason:
        unavailable["SPICE"] = spice_reason
    result = {m: out[m] for m in METRICS}
    result.update(n_images=len(gts), unavailable=unavailable)
    if per_image:
        result["per_image"] = {"ids": list(gts_tok), "stats": image_statistics(gts_tok, res_tok, per["CIDEr"],
                                                                               per["ROUGE_L"])}
    return result


def load_json(path, what):
    """Read a JSON file the scorers take; a missing or malformed file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found", file=path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", file=path) from None


def _norm_id(x):
    """COCO ids are ints; accept "123" too so a stringified results file still matches."""
    if isinstance(x, bool) or not isinstance(x, (int, str)):
        raise TypeError(type(x).__name__)
    return int(x) if isinstance(x, str) and x.isdigit() else x


def skipped_list(skipped, found=None):
    """``[{"id", "reason"}]`` of the records skipped as bad, for scores.json.

    skipped: ``{id: reason}`` or an iterable of ``(id, reason)`` pairs or of ids; found: the ids
    of the split (only those are listed: a bad record of another split was never to be scored).
    """
    items = skipped.items() if isinstance(skipped, dict) else skipped or ()
    pairs = [(x[0], x[1]) if isinstance(x, (tuple, list)) else (x, None) for x in items]
    return [{"id": i, "reason": why} for i, why in pairs if found is None or i in found]


def load_karpathy_references(path, split="test", exclude=(), excluded=None):
    """{image_id: [raw reference, ...]} for one split of Karpathy's ``dataset_coco.json`` (§5).

    image_id is the record's ``cocoid``, or its ``imgid`` when there is none; "train" includes
    "restval"; "all" takes every image. ``exclude``: ids left out (records a loader skipped as
    bad, whatever is wrong with them); the ones of this split are appended to ``excluded``.
    """
    exclude = {_norm_id(x) for x in exclude}
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", remedy=f"use one of {', '.join(SPLITS)}")
    data = load_json(path, "Karpathy dataset_coco.json")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError('expected {"images": [...]} (Karpathy dataset_coco.json)', file=path)
    refs = {}
    for i, img in enumerate(data["images"]):
        if img.get("split") not in SPLITS[split]:
            continue
        image_id = img.get("cocoid", img.get("imgid"))
        if image_id is not None and _norm_id(image_id) in exclude:
            if excluded is not None:
                excluded.append(_norm_id(image_id))
            continue
        if image_id is None:
            raise DataError("image has neither cocoid nor imgid", file=path, record=i)
        sentences = img.get("sentences") or []
        raws = [s.get("raw") for s in sentences if isinstance(s, dict)]
        if not raws or not all(isinstance(r, str) for r in raws):
            raise DataError("image has no reference sentences with a 'raw' string",
                            file=path, record=image_id)
        image_id = _norm_id(image_id)
        if image_id in refs:
            raise DataError("duplicate image id", file=path, record=image_id)
        refs[image_id] = raws
    if not refs:
        found = sorted({str(img.get("split")) for img in data["images"]})
        raise DataError(f"no images in split {split!r} (splits present: {', '.join(found)})",
                        file=path)
    return refs


def load_predictions(path):
    """{image_id: caption} from a standard COCO results list ``[{"image_id", "caption"}, ...]``."""
    data = load_json(path, "predictions")
    if not isinstance(data, list):
        raise DataError('expected a COCO results list [{"image_id": ..., "caption": ...}, ...]',
                        file=path)
    res = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "image_id" not in item or "caption" not in item:
            raise DataError('entry needs "image_id" and "caption"', file=path, record=i)
        if not isinstance(item["caption"], str):
            raise DataError("caption is not a string", file=path, record=item["image_id"])
        try:
            image_id = _norm_id(item["image_id"])
        except TypeError:
            raise DataError("image_id must be an int or string", file=path, record=i) from None
        if image_id in res:
            raise DataError("duplicate prediction for image", file=path, record=image_id,
                            remedy="keep one caption per image")
        res[image_id] = item["caption"]
    return res


def score_coco_files(gt_path, pred_path, split="test", *, spice=None, timings=None, skipped=None,
                     per_image=False, meteor=True):
    """:func:`score_captions` on a Karpathy split and a COCO results file; adds "split".

    skipped: records the loader skipped as bad (``{image_id: reason}``, ``(id, reason)`` pairs or
    ids): left out of the references, so the predictions need not cover them, and listed in the
    result's ``"skipped"`` (those of this split). ``n_images`` counts the images scored.
    """
    pairs = skipped_list(skipped)
    reasons = {_norm_id(x["id"]): x["reason"] for x in pairs}
    found = []
    gts = load_karpathy_references(gt_path, split, exclude=reasons, excluded=found)
    dropped = set(found)
    res = {k: v for k, v in load_predictions(pred_path).items() if k not in dropped}  # scores nothing
    check_coverage(gts, res, file=pred_path)
    result = score_captions(gts, res, spice=spice, timings=timings, per_image=per_image, meteor=meteor)
    result["split"] = split
    if skipped is not None:
        result["skipped"] = [{"id": i, "reason": reasons[i]} for i in found]
    return result


def skipped_note(result):
    """`` (1 bad record skipped: 391895)`` when the result lists skipped records, else nothing."""
    skipped = result.get("skipped") or []
    if not skipped:
        return ""
    n = len(skipped)
    return f" ({n} bad record{'' if n == 1 else 's'} skipped: {_few([s['id'] for s in skipped])})"


# The human table: percent, pycocoevalcap's names.
def format_coco(result):
    """Aligned text table of a :func:`score_captions` result (metrics in percent)."""
    lines = [f"COCO captions: {result['n_images']} images scored" + skipped_note(result)
             + (f", split {result['split']}" if "split" in result else "")]
    width = max(map(len, METRICS))
    for m in METRICS:
        value = result[m]
        lines.append(f"  {m:<{width}}  " + ("   n/a" if value is None else f"{100 * value:6.2f}"))
    for m, reason in result.get("unavailable", {}).items():
        lines.append(f"  {m} not computed: {reason}")
    return "\n".join(lines)


__all__ = ["METRICS", "JavaNotFoundError", "require_java", "spice_unavailable_reason",
           "check_coverage", "ptb_tokenize", "score_captions", "load_karpathy_references",
           "load_predictions", "score_coco_files", "format_coco", "skipped_list"]
