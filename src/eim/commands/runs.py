"""``eim runs show RUN [--json] [--plot OUT.html]``: what a run folder holds.

One row per stage of the run's recipe: its state (finished, running, checkpointed, not started),
the steps it has logged (of its total once finished), wall-clock, samples/s, the final training
losses and the best value of every validation term with its step; then where each stage's weights
are (a finished stage's ``model.safetensors``, a running one's checkpoint and its step). It only
reads, so it is safe on a run that is still training (docs/design.md §9).

Examples::

    eim runs show runs/llava
    eim runs show runs/llava --json
    eim runs show runs/llava --plot runs/llava/curves.html   # every stage's loss curves
"""

import json

from eim.cli_help import verb_help
from eim.plot import run_page
from eim.training.run_summary import format_run, run_summary


SHOW = ("Show what a run folder holds, one row per stage of its recipe: its state (finished, running, "
        "checkpointed, not started), the steps it has logged, wall-clock, samples/s, the final training "
        "losses and the best value of every validation term; then where each stage's weights are. It "
        "only reads, so it is safe on a run that is still training.")
SHOW_EXAMPLES = ("eim runs show runs/clipcap",
                 "eim runs show runs/clipcap --plot curves.html          # also every stage's loss curves")


def add_parser(sub):
    p = sub.add_parser("runs", help="show what a run folder holds (stages, steps, losses, checkpoints)",
                       **verb_help(SHOW, *SHOW_EXAMPLES))
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = actions.add_parser("show", help="a run's stages as a table", **verb_help(SHOW, *SHOW_EXAMPLES))
    s.add_argument("run", help="the run folder (the --out of 'eim train')")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--plot", metavar="OUT.html", default=None,
                   help="also write one HTML page with the table and every stage's loss curves "
                   "(training solid, validation dashed)")
    s.set_defaults(func=show)


def show(args):
    summary = run_summary(args.run)
    table = format_run(summary)
    print(json.dumps(summary, indent=2) if args.json else table)
    if args.plot:
        run_page(args.run, table, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0
