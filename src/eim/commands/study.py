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

import argparse
import shlex
import sys

from eim.demo.study import load_spec, run_study, spec_names
from eim.demo.worlds import WORLDS
from eim.evaluation.bootstrap import half_width


def add_parser(sub):
    p = sub.add_parser("study", help="run an ablation study with confidence intervals (eim study --list)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="?", help="shipped study name (see --list) or a YAML path")
    p.add_argument("--list", action="store_true", help="list the shipped studies and exit")
    p.add_argument("--out", help="output folder (study.json, report.html)")
    p.add_argument("--cache", default=None, help="data, encoders and runs, shareable between studies (default OUT/cache)")
    p.add_argument("--preset", default="tiny", choices=sorted(WORLDS),
                   help="tiny: small CLIP + small GPT-2 (default); smol: SmolLM2-135M; test: seconds")
    p.add_argument("--seeds", type=int, default=None, help="seeds per variant (default: the spec's)")
    p.add_argument("--condition", action="append", default=None,
                   help="run only this condition (transfer, indomain; repeatable; default: the spec's)")
    p.add_argument("--select-on", default=None, help="split hyper-parameters are chosen on (default: the "
                   "spec's, val); 'test' is refused")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


FEW_SEEDS = 5  # below this the printed intervals come with a warning (docs/evidence.md §4)


def run(args):
    if args.list or not args.spec:
        for name in spec_names():
            print(f"{name:<20}{load_spec(name).title}")
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
                  f"[{lo:+.2f}, {hi:+.2f}]  (half-width {half_width(cmp['ci95']):.2f})")
    if study["seeds"] < FEW_SEEDS:
        print(f"note: {study['seeds']} seed(s). The intervals resample the seeds there are: with three, 3 of 12 "
              "intervals claimed effects that ten seeds did not show (docs/evidence.md §4); read them as leads.")
    print(f"study: {args.out}/study.json  report: {args.out}/report.html  ({study['seconds'] / 60:.1f} min)")
    return 0
