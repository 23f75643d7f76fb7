"""``eim demo [--task coco|scienceqa|mme] [--out DIR] [--preset tiny|smol|test] [--seeds N]``: baseline vs
EIM, end to end, offline.

See :mod:`eim.demo` (``coco``: ClipCap) and :mod:`eim.demo_sqa` (``scienceqa``, ``mme``: LaVIN). Writes
DIR/report.html and DIR/summary.json; re-running reuses caches.
"""


def add_parser(sub):
    from eim.demo import PRESETS

    import eim.demo
    import eim.demo_sqa

    p = sub.add_parser("demo", help="run baseline vs EIM end to end, offline (ClipCap, or LaVIN with --task)",
                       description=eim.demo.__doc__ + "\n" + eim.demo_sqa.__doc__,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--task", default="coco", choices=("coco", "scienceqa", "mme"),
                   help="coco: ClipCap vs ClipCap+EIM captioning (default); scienceqa: LaVIN vs LaVIN+EIM on "
                        "ScienceQA-format problems; mme: LaVIN vs LaVIN+EIM instruction-tuned on LLaVA-format "
                        "data, scored on MME-format questions")
    p.add_argument("--out", default=None, help="output folder (default: eim-demo, or eim-demo-<task>)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="tiny: small CLIP + small GPT-2 (a tiny LLaMA for --task scienceqa/mme; minutes); "
                        "smol: small CLIP + SmolLM2-135M; test: a few images and steps (smoke test)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant (3 gives mean ± std)")
    p.add_argument("--variants", default=None,
                   help="coco task: comma-separated recipes to compare (default clipcap,clipcap_eim,clipcap_joint; "
                        "the ablations clipcap_eim_st, clipcap_eim_lm, clipcap_eim_ie may be added)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args):
    if args.task != "coco":
        return run_task(args)
    from eim.demo import run_demo

    args.out = args.out or "eim-demo"
    from eim.demo import VARIANTS

    variants = tuple(args.variants.split(",")) if args.variants else VARIANTS
    s = run_demo(args.out, preset=args.preset, seeds=args.seeds, quiet=args.quiet, variants=variants)
    print(f"\n{'model':<26}" + "".join(f"{m:>10}" for m in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr")))
    for v, d in s["variants"].items():
        row = "".join(f"{'n/a' if d['metrics'][m]['mean'] is None else format(d['metrics'][m]['mean'] * 100, '.2f'):>10}"
                      for m in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"))
        print(f"{d['label']:<26}{row}")
    if s.get("verdict"):
        print(s["verdict"])
    print(f"report: {args.out}/report.html  summary: {args.out}/summary.json  ({s['seconds_total']:.0f} s)")
    return 0


def run_task(args):
    from eim.demo_sqa import run_task_demo

    out = args.out or f"eim-demo-{args.task}"
    s = run_task_demo(args.task, out, preset=args.preset, seeds=args.seeds, quiet=args.quiet)
    names = s["metric_names"]
    print(f"\n{'model':<20}" + "".join(f"{m:>11}" for m in names))
    for d in s["variants"].values():
        row = "".join(f"{'n/a' if d['metrics'][m]['mean'] is None else format(d['metrics'][m]['mean'], '.2f'):>11}"
                      for m in names)
        print(f"{d['label']:<20}{row}")
    if s.get("verdict"):
        print(s["verdict"])
    print(f"report: {out}/report.html  summary: {out}/summary.json  ({s['seconds_total']:.0f} s)")
    return 0
