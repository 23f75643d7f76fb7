"""The `eim` command line: parses, then calls the library. ``main(argv)`` runs in tests.

Each verb is one module of :mod:`eim.commands` exposing ``add_parser(subparsers)``, which
registers a sub-parser whose ``func(args) -> int`` does the work. Only the module of the verb
being run is imported (the others are listed by name and help line), so ``eim --help`` stays
instant while each command imports the library it needs at its module top. Errors derived from
:class:`eim.EIMError` are printed as one clear line and exit with status 2.
"""

import argparse
import importlib
import sys

from eim import __version__
from eim.cli_help import verb_help
from eim.commands import plugin_table
from eim.errors import EIMError

# verb -> (module, one-line help), in the order `eim --help` lists them
COMMANDS = {
    "train": ("eim.commands.train", "train a recipe's stages on a dataset"),
    "params": ("eim.commands.params", "parameter counts per segment (meta device, no weights)"),
    "caption": ("eim.commands.caption", "caption images with a trained checkpoint"),
    "chat": ("eim.commands.chat", "chat with a trained checkpoint about an image (streamed, or one-shot)"),
    "export": ("eim.commands.export", "write a trained run in a format other tools serve (llava-hf)"),
    "data": ("eim.commands.data", "generate, inspect and validate datasets"),
    "banks": ("eim.commands.banks", "build feature banks"),
    "score": ("eim.commands.score", "score saved predictions (COCO captions, ScienceQA, MME)"),
    "eval": ("eim.commands.evaluate", "generate with a checkpoint on a benchmark and score it"),
    "runs": ("eim.commands.runs", "show what a run folder holds (stages, steps, losses, checkpoints)"),
    "accelerate-config": ("eim.commands.accelerate_config",
                          "where the shipped launch configs are (DDP, FSDP, DeepSpeed ZeRO-2/3)"),
}


def _verb(argv):
    """The verb in ``argv`` (its first word that is not an option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def commands():
    """Every verb: eim's own, then those other installed packages register (:mod:`eim.commands`)."""
    return {**COMMANDS, **{k: v for k, v in plugin_table("VERBS").items() if k not in COMMANDS}}


def build_parser(verb=None):
    """The ``eim`` parser; ``verb`` (or every verb, when ``"all"``) gets its full sub-parser."""
    parser = argparse.ArgumentParser(prog="eim", **verb_help(
        "EIM: train CLIP -> projector -> LLM models with feature banks, contrastive losses and "
        "segmented training (no extra inference parameters), then caption, chat, evaluate and export "
        "them. Each command has its own options and examples: eim COMMAND --help.",
        "eim demo --out eim-demo                                # baseline vs EIM, offline, in minutes",
        "eim train clipcap_eim --data data/coco --out runs/eim",
        "eim runs show runs/clipcap"))
    parser.add_argument("--version", action="version", version=f"eim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_line) in commands().items():
        if verb in (name, "all"):
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_verb(argv))
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
