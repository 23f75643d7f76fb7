"""``eim params RECIPE [--json]``: total and trainable parameters per segment (paper Table 2 layout).

The model is built on the ``meta`` device, so 7B-scale recipes cost no memory and need no weights.
"Trainable" counts what the recipe's tuning methods train (e.g. VPT prompts for CLIP).
"""

import json

from eim.api import param_report
from eim.cli_help import verb_help
from eim.recipe import load_recipe, parse_overrides


def add_parser(sub):
    p = sub.add_parser("params", help="parameter counts per segment (meta device, no weights)", **verb_help(
        "Print the total and trainable parameters of each segment of a recipe's model (CLIP vision, "
        "projector, LLM) in the paper's Table 2 layout. The model is built on the meta device, so "
        "7B-scale recipes need no memory and no weights. Trainable counts what the recipe's tuning "
        "methods train (e.g. VPT prompts for CLIP); recipe overrides such as --lm.name_or_path apply.",
        "eim params clipcap_eim",
        "eim params lavin_7b --json"))
    p.add_argument("recipe", help="shipped recipe name (e.g. clipcap) or a YAML path")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run, allow_overrides=True)


def run(args):
    recipe = load_recipe(args.recipe, parse_overrides(args.overrides))
    rep = param_report(recipe)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    names = {"vision": "CLIP vision (image encoder)", "projector": f"ST ({recipe.projector.type})",
             "lm": f"LLM ({recipe.lm.name_or_path})"}
    print(f"recipe {recipe.name}")
    print(f"{'segment':<34}{'total':>16}{'trainable':>16}")
    for seg, c in rep["segments"].items():
        print(f"{names[seg]:<34}{c['total']:>16,}{c['trainable']:>16,}")
    print(f"{'all':<34}{rep['total']:>16,}{rep['trainable']:>16,}")
    return 0
