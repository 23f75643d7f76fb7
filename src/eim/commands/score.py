"""`eim score {coco,scienceqa,mme}`: score saved predictions (docs/design.md §6). Parses, then calls the
library (:mod:`eim.evaluation.coco`, ``.scienceqa``, ``.mme``); ``--json`` prints JSON only.

    eim score coco --gt dataset_coco.json --pred results.json [--split test] [--exclude ID,...] [--json]
    eim score scienceqa --problems problems.json --pred predictions.json [--split test] [--exclude QID,...] [--json]
    eim score mme --results DIR [--json]
"""

import json

from eim.cli_help import verb_help
from eim.evaluation.coco import format_coco, score_coco_files
from eim.evaluation.mme import format_mme, score_mme_dir
from eim.evaluation.scienceqa import format_scienceqa, score_scienceqa_files


def _emit(result, args, fmt):
    print(json.dumps(result, indent=2) if args.json else fmt(result))
    return 0


def _excluded(args):
    """``--exclude`` ids as the scorers' ``skipped`` (None when not given)."""
    ids = [i.strip() for group in args.exclude or () for i in group.split(",") if i.strip()]
    return [(i, "excluded with --exclude") for i in ids] or None


def _coco(args):
    spice = False if args.no_spice else None
    return _emit(score_coco_files(args.gt, args.pred, args.split, spice=spice, skipped=_excluded(args)),
                 args, format_coco)


def _scienceqa(args):
    result = score_scienceqa_files(args.problems, args.pred, args.split, args.splits, skipped=_excluded(args))
    return _emit(result, args, format_scienceqa)


def _mme(args):
    return _emit(score_mme_dir(args.results), args, format_mme)


def add_parser(subparsers):
    """Register ``score`` and its benchmarks on the top-level ``eim`` sub-parsers."""
    score = subparsers.add_parser(
        "score", help="score saved predictions (COCO captions, ScienceQA, MME)", **verb_help(
            "Score saved predictions with each benchmark's official protocol: COCO captions with "
            "pycocoevalcap, ScienceQA accuracy by category, MME's perception and cognition scores. The "
            "predictions are files like those eim eval writes into its --out folder (FILE and DIR in the examples).",
            "eim score coco --gt data/coco/dataset_coco.json --pred FILE",
            "eim score mme --results DIR --json"))
    bench = score.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    def common(p):
        p.add_argument("--json", action="store_true", help="print the scores as JSON only")

    def exclude(p, what):
        p.add_argument("--exclude", action="append", metavar="ID[,ID...]",
                       help=f"{what} not to score (e.g. the bad records 'eim eval --skip-bad' skipped, "
                       "listed in its scores.json); listed as skipped")

    p = bench.add_parser(
        "coco", help="COCO captions: BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE (pycocoevalcap)", **verb_help(
            "Score captions of a Karpathy split with pycocoevalcap after PTB tokenization (needs Java). "
            "JSON values are pycocoevalcap's raw 0-1 scores; the table shows percent. SPICE is null, "
            "with the reason, when Stanford CoreNLP is not installed. FILE is a results.json such as "
            "eim eval --task coco writes.",
            "eim score coco --gt data/coco/dataset_coco.json --pred FILE",
            "eim score coco --gt data/coco/dataset_coco.json --pred FILE --split val --no-spice --json"))
    p.add_argument("--gt", required=True, metavar="FILE", help="Karpathy dataset_coco.json")
    p.add_argument("--pred", required=True, metavar="FILE",
                   help='COCO results list [{"image_id": cocoid, "caption": str}, ...]')
    p.add_argument("--split", default="test", help="Karpathy split (default: test)")
    p.add_argument("--no-spice", action="store_true",
                   help="skip SPICE even when its CoreNLP jars are installed (it is slow)")
    exclude(p, "image ids")
    common(p)
    p.set_defaults(func=_coco)

    p = bench.add_parser(
        "scienceqa", help="ScienceQA accuracy by category (NAT ... G7-12, Avg)", **verb_help(
            'Accuracy of "The answer is X." predictions, in percent, by subject, context (TXT/IMG/NO) '
            "and grade. Unparseable answers count as wrong. FILE is a predictions.json such as "
            "eim eval --task scienceqa writes.",
            "eim score scienceqa --problems data/scienceqa/problems.json --pred FILE",
            "eim score scienceqa --problems data/scienceqa/problems.json --pred FILE --exclude ID --json"))
    p.add_argument("--problems", required=True, metavar="FILE", help="ScienceQA problems.json")
    p.add_argument("--pred", required=True, metavar="FILE", help='{qid: "generated text"} JSON')
    p.add_argument("--split", default="test", help="split in pid_splits.json (default: test)")
    p.add_argument("--splits", metavar="FILE",
                   help="pid_splits.json (default: the one next to problems.json)")
    exclude(p, "qids")
    common(p)
    p.set_defaults(func=_scienceqa)

    p = bench.add_parser(
        "mme", help="MME perception/cognition scores (official calculation)", **verb_help(
            "MME's perception and cognition scores from a folder of <subtask>.txt files in the official "
            "eval tool's layout (image, question, gt, prediction; tab-separated; two lines per image), "
            "such as the mme_results folder eim eval --task mme writes.",
            "eim score mme --results DIR",
            "eim score mme --results DIR --json"))
    p.add_argument("--results", required=True, metavar="DIR", help="folder of <subtask>.txt")
    common(p)
    p.set_defaults(func=_mme)
    return score
