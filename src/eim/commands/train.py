"""``eim train RECIPE --data PATH --out RUN_DIR [--resume] [--train.lr 1e-4 ...]``

Runs every stage of the recipe (DESIGN §3) on the dataset at PATH (format detected, or
``--data-format``). Feature banks the EIM losses need are built (or reused when their
fingerprint matches) before the stage that needs them. Multi-process: prefix with
``accelerate launch [--config_file eim/accelerate_configs/ddp.yaml] -m eim.cli`` (or
``torchrun --nproc-per-node N -m eim.cli``) — the command is otherwise the same;
``train.batch_size`` is per process (see :mod:`eim.train.trainer`). ``EIM_SHARD_BANKS=1``
splits each feature bank by rows across the processes (:mod:`eim.distributed`).
"""

import os

from eim.config import load_recipe, parse_overrides


def add_parser(sub):
    from eim.data import add_data_args

    p = sub.add_parser("train", help="train a recipe's stages on a dataset", description=__doc__,
                       epilog="Any recipe field can be overridden with a dotted flag, e.g. "
                              "--train.lr 1e-4 --stages.0.steps 100 --vision.features full")
    p.add_argument("recipe", help="shipped recipe name (clipcap, clipcap_eim, ...) or a YAML path")
    add_data_args(p)
    p.add_argument("--out", required=True, help="run folder (stages, checkpoints, metrics, banks)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--no-rebuild", action="store_true",
                   help="refuse (instead of rebuilding) feature banks whose fingerprint does not match")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run, allow_overrides=True)


def train(recipe, dataset, out, resume=False, no_rebuild=False, quiet=False, callbacks=(), accelerator=None,
          banks_dir=None, shard_banks=None):
    """Library entry point: build the model from ``recipe`` and run all stages. Returns summaries.

    ``banks_dir``: where feature banks live (default ``out/banks``); runs that share data and
    encoders can share one folder, since a bank is only reused when its fingerprint matches.
    ``shard_banks``: split banks by rows across processes (default: on when the recipe's
    ``eim.shard_banks`` or the ``EIM_SHARD_BANKS=1`` environment variable says so).
    """
    import torch

    from eim.banks import BankProvider
    from eim.model.multimodal import build_model
    from eim.train.collate import load_image_processor
    from eim.train.trainer import Trainer, make_accelerator

    quiet_transformers()
    acc = accelerator or make_accelerator(recipe)  # first: it joins the process group of a launcher
    if shard_banks is None:  # the recipe's eim.shard_banks or the environment turns it on
        shard_banks = recipe.eim.shard_banks or (
            os.environ.get("EIM_SHARD_BANKS", "0").lower() not in ("", "0", "false", "no"))
    torch.manual_seed(recipe.train.seed)  # ST init and VPT prompts: a run is reproducible from its recipe
    model, tok = build_model(recipe)
    proc = load_image_processor(recipe.vision.name_or_path, model.vision.vision_model.config.image_size)
    banks = BankProvider(recipe, dataset, out, banks_dir=banks_dir, model=model, tokenizer=tok, image_processor=proc,
                         no_rebuild=no_rebuild, quiet=quiet, device=acc.device, shard=bool(shard_banks))
    trainer = Trainer(recipe, model, tok, proc, dataset, out, banks=banks, callbacks=callbacks, quiet=quiet,
                      accelerator=acc)
    return trainer.run(resume=resume)


def quiet_transformers():
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def run(args):
    from eim.data import dataset_from_args

    recipe = load_recipe(args.recipe, parse_overrides(args.overrides))
    dataset = dataset_from_args(args, mode="train")
    summaries = train(recipe, dataset, args.out, resume=args.resume, no_rebuild=args.no_rebuild, quiet=args.quiet)
    from eim.distributed import rank

    if rank() != 0:
        return 0
    for s in summaries:
        final = ", ".join(f"{k}={v:.4f}" for k, v in s["final"].items())
        print(f"stage {s['stage']} {s['name']}: {s['steps']} steps, {s['seconds']:.1f}s, {final}")
    print(f"model: {args.out}")
    return 0
