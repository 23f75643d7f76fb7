"""``eim demo [--out DIR] [--preset tiny|smol] [--seeds N]``: baseline vs EIM, end to end, offline.

See :mod:`eim.demo`. Writes DIR/report.html and DIR/summary.json; re-running reuses caches.
"""


def add_parser(sub):
    from eim.demo import PRESETS

    p = sub.add_parser("demo", help="run the ClipCap vs ClipCap+EIM experiment end to end (offline)",
                       description=__import__("eim.demo", fromlist=["x"]).__doc__,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--out", default="eim-demo", help="output folder (default: eim-demo)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="tiny: small CLIP + small GPT-2 (minutes); smol: small CLIP + SmolLM2-135M; "
                        "test: a few images and steps (smoke test)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant (3 gives mean ± std)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args):
    from eim.demo import run_demo

    s = run_demo(args.out, preset=args.preset, seeds=args.seeds, quiet=args.quiet)
    print(f"\n{'model':<26}" + "".join(f"{m:>10}" for m in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr")))
    for v, d in s["variants"].items():
        row = "".join(f"{'n/a' if d['metrics'][m]['mean'] is None else format(d['metrics'][m]['mean'] * 100, '.2f'):>10}"
                      for m in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"))
        print(f"{d['label']:<26}{row}")
    if s.get("verdict"):
        print(s["verdict"])
    print(f"report: {args.out}/report.html  summary: {args.out}/summary.json  ({s['seconds_total']:.0f} s)")
    return 0
