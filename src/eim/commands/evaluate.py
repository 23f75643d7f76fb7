"""``eim eval CHECKPOINT --task {coco,scienceqa,mme} --data PATH --out DIR``: generate, then score.

    eim eval runs/clipcap --task coco --data data/coco --out eval/coco
    eim eval runs/lavin --task scienceqa --data data/scienceqa --out eval/sqa --batch-size 8
    eim eval runs/lavin --task mme --data data/MME --out eval/mme --json

Writes the predictions in the format ``eim score`` reads (COCO ``results.json``, ScienceQA
``predictions.json``, MME ``mme_results/<subtask>.txt``), ``generation.json`` (how they were
made) and ``scores.json``, then prints the scorer's table, which says how many samples were
scored. ``--skip-bad`` skips every record ``eim data check`` would flag (images are decoded
first): they are neither generated nor scored, and ``scores.json`` lists them in ``"skipped"``.
Everything is written beside ``--out`` and moved in once scored, so a failed evaluation leaves an
earlier one there as it was. The library behind it is :mod:`eim.evaluation.generate`.
"""

import json

from eim.cli_help import verb_help
from eim.data import add_data_args, dataset_from_args
from eim.evaluation import coco, mme, scienceqa
from eim.evaluation.generate import BENCHMARKS, evaluate_checkpoint

TABLES = {"coco": coco.format_coco, "scienceqa": scienceqa.format_scienceqa, "mme": mme.format_mme}


def add_parser(sub):
    p = sub.add_parser("eval", help="generate with a checkpoint on a benchmark and score it", **verb_help(
        "Generate with a trained checkpoint on a benchmark (the test split by default) and score the "
        "output as eim score does. --out gets the predictions (COCO results.json, ScienceQA "
        "predictions.json, MME mme_results/<subtask>.txt), generation.json (how they were made) and "
        "scores.json; the scorer's table is printed. With --skip-bad the records eim data check flags "
        "are neither generated nor scored (scores.json lists them). A failed evaluation leaves an "
        "earlier one in --out as it was.",
        "eim eval runs/clipcap --task coco --data data/coco --out eval/coco",
        "eim eval runs/lavin --task scienceqa --data data/scienceqa --out eval/sqa --batch-size 8"))
    p.add_argument("checkpoint", help="run folder (last finished stage), stage folder or "
                   "model.safetensors")
    p.add_argument("--task", required=True, choices=BENCHMARKS, help="the benchmark, and so its scorer")
    add_data_args(p, split="test")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for predictions, generation.json and scores.json")
    g = p.add_argument_group("generation (default: the recipe's generation section)")
    g.add_argument("--beams", type=int, default=None, help="beam width (1 = greedy)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the recipe's (ScienceQA: at least 64)")
    g.add_argument("--batch-size", type=int, default=None, help="samples generated at once")
    g.add_argument("--stop-text", default=None, metavar="TEXT",
                   help="cut each output after TEXT; '' for none (default: the recipe's; ScienceQA: "
                   "the answer sentence 'The answer is X.', as only the letter is scored)")
    g.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="text tokens kept per prompt, the last ones (default: train.max_length)")
    g.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--no-spice", action="store_true", help="COCO: skip SPICE even when installed")
    p.add_argument("--json", action="store_true", help="print the scores as JSON only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args):
    dataset = dataset_from_args(args, mode="eval")
    scores = evaluate_checkpoint(
        args.checkpoint, args.task, dataset, args.out, num_beams=args.beams,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop_text=args.stop_text,
        max_prompt_tokens=args.max_prompt_tokens, spice=False if args.no_spice else None,
        device=args.device, quiet=args.quiet)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        print(TABLES[args.task](scores))
        print(f"written to {args.out}")
    return 0
