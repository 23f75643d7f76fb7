"""``eim demo [--task coco|scienceqa|mme|llava] [--out DIR] [--preset tiny|smol|test] [--seeds N]``: baseline
vs EIM, end to end, offline.

See :mod:`eim_harness.coco` (``coco``: ClipCap), :mod:`eim_harness.lavin` (``scienceqa``, ``mme``: LaVIN) and
:mod:`eim_harness.llava` (``llava``: LLaVA-1.5, presets tiny and test).
Writes DIR/report.html and DIR/summary.json; re-running reuses caches.
"""

from eim_harness import coco
from eim_harness.registry import TASKS
from eim_harness.pipeline import run_comparison
from eim.cli_help import verb_help
from eim.errors import ConfigError



def add_parser(sub):
    p = sub.add_parser("demo", help="run baseline vs EIM end to end, offline (ClipCap, or LaVIN/LLaVA with --task)",
                       **verb_help(
        "The paper's experiment in miniature, offline, end to end: train a baseline and its EIM "
        "variant on the synthetic shapes world with the same number of optimiser steps on the final "
        "objective, evaluate both on the test split and write DIR/report.html and DIR/summary.json. "
        "--task picks the method: coco (ClipCap captioning, the default), scienceqa and mme (LaVIN), "
        "llava (LLaVA-1.5). The tiny preset takes minutes on a CPU, test seconds; re-running reuses "
        "the caches.",
        "eim demo --out eim-demo                                # ClipCap vs ClipCap + EIM",
        "eim demo --task scienceqa --preset smol                # LaVIN vs LaVIN + EIM on SmolLM2-135M"))
    p.add_argument("--task", default="coco", choices=tuple(TASKS),
                   help="coco: ClipCap vs ClipCap+EIM captioning (default); scienceqa: LaVIN vs LaVIN+EIM on "
                        "ScienceQA-format problems; mme: LaVIN vs LaVIN+EIM instruction-tuned on LLaVA-format "
                        "data, scored on MME-format questions; llava: LLaVA-1.5 vs LLaVA+EIM (captions, then "
                        "LLaVA-format instructions), scored on MME-format questions and captions")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: eim-demo, or eim-demo-<task>)")
    p.add_argument("--preset", default="tiny", choices=sorted(coco.PRESETS),
                   help="tiny: small CLIP + small GPT-2 (a tiny LLaMA for --task scienceqa/mme; minutes); "
                        "smol: small CLIP + SmolLM2-135M; test: a few images and steps (smoke test)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant (3 gives mean ± std)")
    p.add_argument("--variants", default=None,
                   help="comma-separated recipes to compare (coco default clipcap,clipcap_eim,clipcap_joint; "
                        "the ablations clipcap_eim_st, clipcap_eim_lm, clipcap_eim_ie may be added)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args):
    task = TASKS[args.task]
    if args.preset not in task.presets:
        raise ConfigError(f"--task {args.task} has no {args.preset!r} preset (allowed: {', '.join(task.presets)})")
    out = args.out or ("eim-demo" if args.task == "coco" else f"eim-demo-{args.task}")
    variants = tuple(args.variants.split(",")) if args.variants else None
    s = run_comparison(task, out, preset=args.preset, seeds=args.seeds, quiet=args.quiet, variants=variants)
    shown = {"coco": ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"),
             "llava": ("perception", "mme_acc", "mme_acc_plus", "Bleu_4", "CIDEr")}.get(args.task, s["metric_names"])
    scale = task.key_scale
    widths = [max(11, len(m) + 2) for m in shown]
    print(f"\n{'model':<26}" + "".join(f"{m:>{w}}" for m, w in zip(shown, widths)))
    for d in s["variants"].values():
        row = "".join(f"{'n/a' if d['metrics'][m]['mean'] is None else format(d['metrics'][m]['mean'] * scale, '.2f'):>{w}}"
                      for m, w in zip(shown, widths))
        print(f"{d['label']:<26}{row}")
    if s.get("verdict"):
        print(s["verdict"])
    print(f"report: {out}/report.html  summary: {out}/summary.json  ({s['seconds_total']:.0f} s)")
    return 0
