"""The library's entry points: train a recipe, load a checkpoint for inference, count parameters.

    from eim.api import train, load_for_inference, param_report
    from eim.recipe import load_recipe
    from eim.data import load_dataset

    recipe = load_recipe("clipcap_eim", {"vision.name_or_path": "/models/clip-vit-base-patch32"})
    train(recipe, load_dataset("data/coco", split="train"), "runs/eim")
    model, tokenizer, image_processor, recipe = load_for_inference("runs/eim")

The CLI (:mod:`eim.cli`, :mod:`eim.commands`) parses arguments and calls these; so do the demo
and the benchmarks. The method: docs/design.md.
"""

import os

import torch
from transformers.utils import logging

from eim.banks import BankProvider, bank_dir
from eim.model.multimodal import build_model, segment_counts
from eim.model.vision import load_image_processor
from eim.training.checkpoint import find_checkpoint, load_model_weights
from eim.training.stage import resolve_datasets
from eim.training.trainer import Trainer, make_accelerator


def quiet_transformers():
    """No download bars or info chatter from transformers (errors still show)."""
    logging.disable_progress_bar()
    logging.set_verbosity_error()


def train(recipe, dataset, out, resume=False, no_rebuild=False, quiet=False, callbacks=(), accelerator=None,
          banks_dir=None, shard_banks=None, overwrite=False):
    """Build the model from ``recipe`` and run all its stages on ``dataset`` into ``out``.

    ``dataset``: one dataset, or ``{name: dataset}`` when the recipe's stages name their data
    (``stages.<k>.data``; LLaVA: ``{"captions": ..., "instruct": ...}``), each with its own banks
    (``banks_dir/<name>/``).
    Returns the stage summaries (``stage.json`` of each stage). ``out`` is left as it was when
    it holds another run, or this run's output without ``resume``, and ``overwrite`` is not given
    (:class:`eim.training.run_dir.RunFolderError`; docs/design.md §8). ``resume``: reuse finished
    stages, continue the running one from its checkpoint. ``overwrite``: replace what ``out``
    holds (its old stages go once the new run's first stage has finished). ``banks_dir``: where feature banks
    live (default ``out/banks``); runs that share data and encoders can share one folder, since a
    bank is only reused when its fingerprint matches. ``shard_banks``: split banks by rows across
    processes (default: on when the recipe's ``eim.shard_banks`` or the ``EIM_SHARD_BANKS=1``
    environment variable says so). ``callbacks``: ``f(trainer, stage_index, step)`` after each
    optimiser step.
    """
    quiet_transformers()
    datasets = resolve_datasets(recipe, dataset)  # before any model loads: a missing --data NAME=PATH fails at once
    acc = accelerator or make_accelerator(recipe)  # first: it joins the process group of a launcher
    if shard_banks is None:  # the recipe's eim.shard_banks or the environment turns it on
        shard_banks = recipe.eim.shard_banks or (
            os.environ.get("EIM_SHARD_BANKS", "0").lower() not in ("", "0", "false", "no"))
    torch.manual_seed(recipe.train.seed)  # ST init and VPT prompts: a run is reproducible from its recipe
    model, tok = build_model(recipe)
    proc = load_image_processor(recipe.vision.name_or_path, model.vision.vision_model.config.image_size)
    banks = {name: BankProvider(recipe, ds, out, banks_dir=bank_dir(out, banks_dir, name), model=model, tokenizer=tok,
                                image_processor=proc, no_rebuild=no_rebuild, quiet=quiet, device=acc.device,
                                shard=bool(shard_banks))
             for name, ds in datasets.items()}
    trainer = Trainer(recipe, model, tok, proc, datasets, out, banks=banks, callbacks=callbacks, quiet=quiet,
                      accelerator=acc)
    return trainer.run(resume=resume, overwrite=overwrite)


def load_for_inference(checkpoint):
    """-> (model, tokenizer, image_processor, recipe) with the checkpoint's tuned tensors loaded.

    ``checkpoint``: a run folder (its last finished stage), a stage folder or a ``model.safetensors``.
    """
    quiet_transformers()
    recipe, weights = find_checkpoint(checkpoint)
    model, tok = build_model(recipe)
    load_model_weights(model, weights)
    model.eval()
    proc = load_image_processor(recipe.vision.name_or_path, model.vision.vision_model.config.image_size)
    return model, tok, proc, recipe


def param_report(recipe):
    """``{"segments": {...}, "total", "trainable"}``: parameters per segment, built on the meta
    device (no weights, no memory: works for 7B-scale recipes)."""
    model, _ = build_model(recipe, device="meta")
    segs = segment_counts(model)
    return {"segments": segs, "total": sum(s["total"] for s in segs.values()),
            "trainable": sum(s["trainable"] for s in segs.values())}


__all__ = ["load_for_inference", "param_report", "quiet_transformers", "train"]
