"""The `eim` command line: parses, then calls the library. ``main(argv)`` runs in tests.

Each command lives in a module exposing ``add_parser(subparsers)`` that registers a sub-parser
whose ``func(args) -> int`` does the work. Errors derived from :class:`eim.EIMError` are printed
as one clear line and exit with status 2.
"""

import argparse
import importlib
import sys

from eim import __version__
from eim.errors import EIMError

# Modules that contribute sub-commands, in the order `eim --help` lists them.
COMMAND_MODULES = [
    "eim.commands.train",
    "eim.commands.params",
    "eim.commands.caption",
    "eim.data.cli",
    "eim.commands.banks",
    "eim.evaluation.cli",
    "eim.commands.evaluate",
    "eim.commands.demo",
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="eim",
        description="EIM: train CLIP -> projector -> LLM models with feature banks, contrastive "
        "losses and segmented training (no extra inference parameters).",
    )
    parser.add_argument("--version", action="version", version=f"eim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command not built yet
            if e.name == name:
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "allow_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return args.func(args) or 0
    except EIMError as e:
        print(f"eim {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
