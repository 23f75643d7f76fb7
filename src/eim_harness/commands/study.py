"""``eim study SPEC --out DIR [--preset P] [--seeds N] [--condition C] [--select-on SPLIT]``: run one of
the paper's ablations (or your own spec) with intervals; ``eim study --list`` names the shipped specs.

    eim study clipcap-t4 --out studies/t4 --cache studies/cache      # Table 4: cumulative components
    eim study clipcap-t3 --out studies/t3 --cache studies/cache      # Table 3: each loss alone
    eim study clipcap-t4 --out /tmp/t4 --preset test --seeds 1       # seconds: a smoke run

Writes DIR/study.json (per variant each metric's per-seed values, mean and std, stage costs, and
``comparisons``: paired differences with 95% intervals) and DIR/report.html. Hyper-parameter
sweeps are judged on the validation split; selecting on the test split is refused. Runs, data
and encoders live in --cache (default DIR/cache): studies that share it share every run they
have in common, and a re-run resumes where it stopped.
"""

import shlex
import sys

from eim_harness.study import load_spec, run_study, spec_names
from eim_harness.worlds import WORLDS
from eim.cli_help import verb_help
from eim.evaluation.intervals import half_width


def add_parser(sub):
    p = sub.add_parser("study", help="run an ablation study with confidence intervals (eim study --list)",
                       **verb_help(
        "Run one of the paper's ablations (or your own YAML spec) over seeds and write DIR/study.json "
        "(per variant each metric's per-seed values, mean and std, and paired differences with 95% "
        "intervals) and DIR/report.html. Hyper-parameters are chosen on the validation split; "
        "selecting on the test split is refused. Runs, data and encoders live in --cache: studies "
        "that share it share every run they have in common, and a re-run resumes where it stopped.",
        "eim study --list                                            # the shipped studies",
        "eim study clipcap-t4 --out studies/t4 --cache studies/cache  # Table 4: cumulative components"))
    p.add_argument("spec", nargs="?", help="shipped study name (see --list) or a YAML path")
    p.add_argument("--list", action="store_true", help="list the shipped studies (name, seeds, title) and exit")
    p.add_argument("--out", metavar="DIR", help="output folder (study.json, report.html)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="data, encoders and runs, shareable between studies (default: --out's cache/)")
    p.add_argument("--preset", default="tiny", choices=sorted(WORLDS),
                   help="tiny: small CLIP + small GPT-2 (default); smol: SmolLM2-135M; test: seconds")
    p.add_argument("--seeds", type=int, default=None, help="seeds per variant (default: the spec's)")
    p.add_argument("--condition", action="append", default=None,
                   help="run only this condition (transfer, indomain; repeatable; default: the spec's)")
    p.add_argument("--select-on", default=None, help="split hyper-parameters are chosen on (default: the "
                   "spec's, val); 'test' is refused")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def interval_note(comparisons, seeds):
    """What would narrow the printed intervals, from their two standard errors (docs/design.md §11)."""
    if seeds == 1:
        return "note: one seed: the intervals count test images only, not training noise; use --seeds 3 or more."
    by_seeds = sum(c["se_seeds"] > c["se_items"] for c in comparisons)
    if not by_seeds:
        return f"note: the test images are most of the error in all {len(comparisons)} comparisons: more test images would narrow them."
    return (f"note: the seeds are most of the error in {by_seeds} of {len(comparisons)} comparisons: more seeds "
            "(--seeds), not more test images, would narrow those.")


def run(args):
    if args.list or not args.spec:
        for name in spec_names():
            spec = load_spec(name)
            print(f"{name:<20}{spec.seeds:>3} seeds  {spec.title}")
        return 0
    if not args.out:
        print("eim study: error: --out is required", file=sys.stderr)
        return 2
    study = run_study(args.spec, args.out, preset=args.preset, seeds=args.seeds, select_on=args.select_on,
                      conditions=args.condition, cache=args.cache, quiet=args.quiet,
                      command="eim " + " ".join(map(shlex.quote, sys.argv[1:])))
    for cond, c in study["conditions"].items():
        print(f"\n{cond}:")
        for cmp in c["comparisons"]:
            lo, hi = cmp["ci95"]
            print(f"  {cmp['variant'] + ' - ' + cmp['reference']:<32}{cmp['metric']:>8} {cmp['diff']:+7.2f}  "
                  f"[{lo:+.2f}, {hi:+.2f}]  (half-width {half_width(cmp['ci95']):.2f}; "
                  f"se seeds {cmp['se_seeds']:.2f}, items {cmp['se_items']:.2f})")
    comps = [x for c in study["conditions"].values() for x in c["comparisons"]]
    if comps:
        print(interval_note(comps, study["seeds"]))
    print(f"study: {args.out}/study.json  report: {args.out}/report.html  ({study['seconds'] / 60:.1f} min)")
    return 0
