"""``eim banks build RECIPE --data PATH --out RUN_DIR [--no-rebuild]``

Builds (or reuses, when the fingerprint matches) the feature banks the recipe's losses need
(docs/design.md §2): ``text`` for loss_IE, ``embed`` for loss_ST, ``lm`` for loss_LM, under
``RUN_DIR/banks/`` (a stage's named dataset: ``RUN_DIR/banks/<name>/``). ``eim train`` does this on its own before the stage that needs a bank;
this command builds them ahead of time (e.g. on a different machine or job).
"""

import torch

from eim.api import quiet_transformers
from eim.banks import BankProvider, bank_dir
from eim.cli_help import verb_help
from eim.recipe import load_recipe, parse_overrides
from eim.data import add_data_args
from eim.data.loader import datasets_from_args
from eim.losses import BANK_NAMES, stage_banks
from eim.training.stage import resolve_datasets, stage_data_name


BUILD = ("Build the feature banks a recipe's EIM losses read (text for loss_IE, embed for loss_ST, lm for "
         "loss_LM) under RUN_DIR/banks/, or reuse them when their fingerprint matches. eim train builds them "
         "itself before the stage that needs one; this builds them ahead of time, e.g. on another machine or job.")


def add_parser(sub):
    p = sub.add_parser("banks", help="build feature banks", **verb_help(
        BUILD,
        "eim banks build clipcap_eim --data data/coco --out runs/eim"))
    bsub = p.add_subparsers(dest="banks_command", metavar="ACTION", required=True)
    b = bsub.add_parser("build", help="build or reuse the banks a recipe needs", **verb_help(
        BUILD,
        "eim banks build clipcap_eim --data data/coco --out runs/eim",
        "eim banks build clipcap_eim --data data/coco --out runs/eim --bank text --device cpu"))
    b.add_argument("recipe", help="shipped recipe name (clipcap_eim, llava_eim, ...) or a YAML path")
    add_data_args(b, named=True)
    b.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder; banks go to RUN_DIR/banks/")
    b.add_argument("--bank", action="append", choices=sorted(BANK_NAMES),
                   help="build only this bank (repeatable; default: every bank the recipe's stages use)")
    b.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding a stale bank")
    b.add_argument("--device", default=None,
                   help="where the frozen encoders compute the banks (default: cuda when there is one, else cpu)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=run, allow_overrides=True)


def run(args):
    quiet_transformers()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    recipe = load_recipe(args.recipe, parse_overrides(args.overrides))
    datasets = resolve_datasets(recipe, datasets_from_args(args, mode="train"))
    wanted = {}  # dataset name -> the banks its stages read
    for s in recipe.stages:
        wanted.setdefault(stage_data_name(s), set()).update(stage_banks(s))
    if args.bank:
        wanted = {d: set(args.bank) for d in wanted}
    if not any(wanted.values()):
        print(f"recipe {recipe.name} uses no feature bank (its stages have no ie/st/lm loss)")
    for data, names in wanted.items():
        provider = BankProvider(recipe, datasets[data], args.out, banks_dir=bank_dir(args.out, None, data),
                                no_rebuild=args.no_rebuild, quiet=args.quiet, device=device)
        for name in sorted(names):
            bank = provider.get(name)
            print(f"{name}: {bank.shape[0]} rows x {bank.shape[1]} ({bank.dtype}) -> "
                  f"{provider.dir / (name + '.safetensors')}")
    return 0
