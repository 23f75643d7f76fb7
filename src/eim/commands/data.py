"""``eim data``: generate the shapes world, summarise or validate a dataset.

    eim data shapes --out data/shapes                 # 2000/200/200 images at 64 px, seed 0
    eim data shapes --out /tmp/s --train 50 --val 10 --test 10 --size 32 --seed 1
    eim data stats data/shapes                        # every dataset in the folder
    eim data stats data/shapes/coco --json
    eim data check --data data/shapes/scienceqa --split test
    eim data tokens llava --data captions=data/shapes/coco --data instruct=data/shapes/llava/instruct.json --index 0

``check`` decodes every image (on all CPUs, with a progress bar) and lists every bad record with
its reason, whether or not --skip-bad is given; it exits 1 when it found one, 0 when the data is
clean. ``--skip-bad`` in ``eim train`` / ``eim eval`` skips exactly the records it lists.
"""

import importlib
import json

from eim.cli_help import verb_help
from eim.commands import plugin_table
from eim.data.base import plural
from eim.data.formats import FORMATS
from eim.data.loader import add_data_args, dataset_from_args, datasets_from_args
from eim.data.stats import dataset_stats, format_stats
from eim.errors import ConfigError, DataError
from eim.model.lm import load_tokenizer
from eim.model.multimodal import build_model
from eim.model.splice import IGNORE, TextEncoder
from eim.recipe import load_recipe, parse_overrides
from eim.training.collate import IMAGE_TOKEN_INDEX, token_view
from eim.training.stage import collate_mode, resolve_datasets, stage_data_name
from eim.training.tracking import image_positions


def add_parser(subparsers):
    p = subparsers.add_parser("data", help="generate, inspect and validate datasets", **verb_help(
        "Generate the synthetic shapes world, summarise a dataset, validate one, or show what the "
        "trainer feeds for one sample. Each action has its own options and examples: eim data ACTION --help.",
        "eim data shapes --out data/shapes                     # 2000/200/200 images at 64 px, seed 0",
        "eim data check --data data/coco"))
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    for name, (module, _) in plugin_table("DATA_ACTIONS").items():  # eim data shapes (the harness)
        importlib.import_module(module).add_action(sub)

    st = sub.add_parser("stats", help="images, captions and caption diversity of a dataset", **verb_help(
        "Summarise a dataset, or every dataset in a folder such as the one eim data shapes writes: "
        "images, captions (or problems) per split and, for captions, their diversity: the mean "
        "pairwise BLEU-4 among the captions of one image (near 1: they say the same thing in the same "
        "words) and each caption's BLEU-4 against the others of its image.",
        "eim data stats data/shapes",
        "eim data stats data/shapes/coco --json"))
    st.add_argument("path", help="a dataset path, or a folder of datasets (eim data shapes)")
    st.add_argument("--data-format", choices=sorted(FORMATS), default=None,
                    help="format of path (default: detected)")
    st.add_argument("--max-images", type=int, default=500,
                    help="images per split used for the BLEU diversity numbers")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(func=_stats)

    c = sub.add_parser("check", help="validate a dataset (decoding every image) and list every bad "
                       "record; exit 1 when there is one", **verb_help(
        "Validate a dataset: decode every image (on all CPUs, with a progress bar) and list every bad "
        "record with its reason. Exits 1 when it found one, 0 when the data is clean. --skip-bad in "
        "eim train and eim eval skips exactly the records it lists.",
        "eim data check --data data/coco",
        "eim data check --data data/scienceqa --split test"))
    add_data_args(c)
    c.add_argument("--mode", choices=("train", "eval"), default="train",
                   help="train (default): COCO gives one sample per caption; eval: one per image, with its "
                   "references (the other formats read the same in both)")
    c.set_defaults(func=_check)

    k = sub.add_parser("tokens", help="show what the trainer feeds for one sample: text, token ids, labels",
                       **verb_help(
        "Print what the trainer feeds for one sample of a stage's dataset, in that stage's conversation "
        "template: the text (the image written as <image>), the token ids and which of them are targets, "
        "and the positions the LLM sees (the text and the image's). "
        'With --json, one object {"text", "input_ids", "labels", "positions"} in LLaVA\'s convention: the '
        "image is one entry -200 (IMAGE_TOKEN_INDEX) and labels are -100 wherever the position is not a "
        "target; positions counts the image's positions (the model is built on the meta device, no weights).",
        "eim data tokens llava --data captions=data/shapes/coco --data instruct=data/shapes/llava/instruct.json --index 0",
        "eim data tokens llava --data captions=data/shapes/coco --data instruct=data/shapes/llava/instruct.json --index 0 --stage pretrain --json"))
    k.add_argument("recipe", help="shipped recipe name or a YAML path (recipe overrides too, e.g. --lm.name_or_path)")
    add_data_args(k, named=True)
    k.add_argument("--index", type=int, required=True, help="the sample's index in the stage's dataset")
    k.add_argument("--stage", default=None, help="the stage by name (default: the last, whose template a run is served with)")
    k.add_argument("--json", action="store_true",
                   help='print {"text", "input_ids", "labels", "positions"}: the image as -200 in input_ids, -100 '
                   "where not a target, positions the length the LLM sees")
    k.set_defaults(func=_tokens, allow_overrides=True)
    return p


def _stats(args):
    stats = dataset_stats(args.path, args.data_format, args.max_images)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def _check(args):
    """Decode every image and list every bad record; exit 1 when there is one."""
    ds = dataset_from_args(args, mode=args.mode, skip_bad=True, check_images="decode")
    n = len(ds.skipped)
    print(f"{ds.format} {ds.split}: {plural(len(ds), 'sample')}, {plural(n, 'bad record')}"
          + (" (pass --skip-bad to train or evaluate without them)" if n else ""))
    for rid, why in ds.skipped:
        print(f"  {rid}: {why}")
    return 1 if n else 0


def _tokens(args):
    """What the trainer feeds for one sample of a stage's dataset: text, ids (the image as -200), labels."""
    recipe = load_recipe(args.recipe, parse_overrides(args.overrides))
    names = [s.name for s in recipe.stages]
    if args.stage is not None and args.stage not in names:
        raise ConfigError(f"--stage {args.stage!r}: recipe {recipe.name} has no such stage (stages: {', '.join(names)})")
    stage = recipe.stages[names.index(args.stage) if args.stage else -1]
    ds = resolve_datasets(recipe, datasets_from_args(args))[stage_data_name(stage)]
    if not -len(ds) <= args.index < len(ds):
        raise DataError(f"--index {args.index} is outside the stage's dataset of {plural(len(ds), 'sample')}",
                        remedy=f"pass --index 0..{len(ds) - 1}")
    sample, tok = ds[args.index], load_tokenizer(recipe.lm)
    positions = image_positions(build_model(recipe, device="meta")[0])  # the image's positions: no weights load
    view = token_view(TextEncoder.for_recipe(tok, recipe, stage, image_positions=positions), sample,
                      collate_mode(recipe, stage))
    if args.json:
        print(json.dumps(view))
        return 0
    print(f"stage {stage.name} ({recipe.stage_template(stage)} template), sample {args.index} of {len(ds)}:\n{view['text']}")
    shown = [("<image>" if i == IMAGE_TOKEN_INDEX else tok.convert_ids_to_tokens(i), l != IGNORE)
             for i, l in zip(view["input_ids"], view["labels"])]
    image = f" ({positions} of them the image's)" if IMAGE_TOKEN_INDEX in view["input_ids"] else ""
    print(f"{view['positions']} positions{image}, {sum(t for _, t in shown)} targets ([...]):")
    print(" ".join(f"[{s}]" if t else s for s, t in shown))
    return 0
