"""``eim train RECIPE --data PATH --out RUN_DIR [--resume | --overwrite] [--train.lr 1e-4 ...]``

Runs every stage of the recipe (docs/design.md §3) on the dataset at PATH (format detected, or
``--data-format``). A recipe whose stages name their data takes one ``--data NAME=PATH`` per
name: ``eim train llava --data captions=D/coco --data instruct=D/llava/instruct.json --out runs/llava``. Feature banks the EIM losses need are built (or reused when their
fingerprint matches) before the stage that needs them. Multi-process: prefix with
``accelerate launch [--config_file "$(eim accelerate-config ddp)"] -m eim.cli`` (or
``torchrun --nproc-per-node N -m eim.cli``) — the command is otherwise the same;
``train.batch_size`` is per process (see :mod:`eim.training.trainer`). ``EIM_SHARD_BANKS=1``
splits each feature bank by rows across the processes (:mod:`eim.losses.infonce`).

A command that fails leaves RUN_DIR as it was: the data is read and checked first, a stage runs
in ``stage-<k>-<name>.partial/`` and replaces ``stage-<k>-<name>/`` only once it has finished, a
checkpoint is swapped in whole, and a folder holding a different run (or this run's output,
without --resume) is refused unless --overwrite is given (docs/design.md §8).
"""

from eim.api import train
from eim.cli_help import verb_help
from eim.recipe import load_recipe, parse_overrides
from eim.data import add_data_args
from eim.data.loader import datasets_from_args
from eim.distributed import rank


def add_parser(sub):
    p = sub.add_parser("train", help="train a recipe's stages on a dataset", **verb_help(
        "Train every stage of a recipe (a shipped name or a YAML file) on a dataset, building the "
        "feature banks its EIM losses need before the stage that reads them. Any recipe field can be "
        "overridden with a dotted flag (--train.lr 1e-4, --stages.0.steps 100). A command that fails "
        "leaves --out as it was. On several processes, replace 'eim' with 'accelerate launch -m eim.cli' "
        "or 'torchrun --nproc-per-node N -m eim.cli'; train.batch_size is per process and "
        "EIM_SHARD_BANKS=1 splits each feature bank across the processes.",
        "eim train clipcap_eim --data data/coco --out runs/eim",
        "eim train llava --data captions=data/shapes/coco --data instruct=data/shapes/llava/instruct.json "
        "--out runs/llava --train.batch_size 4",
        'accelerate launch --config_file "$(eim accelerate-config ddp)" -m eim.cli train clipcap_eim '
        "--data data/coco --out runs/eim"))
    p.add_argument("recipe", help="shipped recipe name (clipcap, clipcap_eim, ...) or a YAML path")
    add_data_args(p, named=True)
    p.add_argument("--val-data", metavar="[NAME=]PATH", action="append", default=None,
                   help="held-out data for train.eval_every / train.eval_generate (read with --split val): "
                   "NAME=PATH per stage dataset like --data; default: each dataset's own validation split "
                   "where its files hold one (COCO Karpathy, ScienceQA)")
    p.add_argument("--out", required=True, help="run folder (stages, checkpoints, metrics, banks)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the finished stages in --out and continue the running one from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run --out holds (a different one, or this one without --resume); its "
                   "files stay until the new run's first stage has finished")
    p.add_argument("--no-rebuild", action="store_true",
                   help="refuse (instead of rebuilding) feature banks whose fingerprint does not match")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run, allow_overrides=True)


def run(args):
    recipe = load_recipe(args.recipe, parse_overrides(args.overrides))
    summaries = train(recipe, None, args.out, datasets=datasets_from_args(args, mode="train"), resume=args.resume,
                      overwrite=args.overwrite, no_rebuild=args.no_rebuild, quiet=args.quiet,
                      val_datasets=datasets_from_args(args, mode="train", flag="val-data", split="val") or None)
    if rank() != 0:
        return 0
    for s in summaries:
        final = ", ".join(f"{k}={v:.4f}" for k, v in s["final"].items())
        print(f"stage {s['stage']} {s['name']}: {s['steps']} steps, {s['seconds']:.1f}s, {final}")
    print(f"model: {args.out}")
    return 0
