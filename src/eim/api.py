"""The library's entry points, also exported by ``eim`` itself: train a recipe, load a checkpoint for
inference, count parameters.

    import eim
    recipe = eim.load_recipe("clipcap_eim", {"vision.name_or_path": "/models/clip-vit-base-patch32"})
    eim.train(recipe, eim.load_dataset("data/coco", split="train"), "runs/eim")
    model, tokenizer, image_processor, recipe = eim.load_for_inference("runs/eim")

The CLI (:mod:`eim.cli`, :mod:`eim.commands`) parses arguments and calls these. The method:
docs/design.md.
"""

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Optional, Union

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

from eim.banks import BankProvider, bank_dir
from eim.config import MAIN, Recipe
from eim.data.dataset import Dataset
from eim.model.multimodal import MultimodalLM, build_model, segment_counts
from eim.model.vision import load_image_processor
from eim.training.checkpoint import find_checkpoint, load_checkpoint
from eim.training.stage import resolve_datasets
from eim.training.trainer import Trainer, make_accelerator

PathLike = Union[str, os.PathLike]


class Inference(NamedTuple):
    """What :func:`load_for_inference` returns; unpacks as ``model, tokenizer, image_processor, recipe``."""

    model: MultimodalLM
    tokenizer: PreTrainedTokenizerBase
    image_processor: Any  # transformers' CLIP image processor
    recipe: Recipe


def quiet_transformers() -> None:
    """No download bars or info chatter from transformers (errors still show)."""
    logging.disable_progress_bar()
    logging.set_verbosity_error()


def train(recipe: Recipe, dataset: Optional[Dataset], out: PathLike, *,
          datasets: Optional[Mapping[str, Dataset]] = None, resume: bool = False, no_rebuild: bool = False,
          quiet: bool = False, callbacks: Sequence[Callable] = (), accelerator: Optional[Accelerator] = None,
          banks_dir: Optional[PathLike] = None, shard_banks: Optional[bool] = None,
          overwrite: bool = False, val_datasets: Optional[Mapping[str, Dataset]] = None) -> list[dict[str, Any]]:
    """Build the model from ``recipe`` and run all its stages into ``out``.

    ``dataset``: what the stages that name no data train on. ``datasets``: ``{name: dataset}`` for the
    stages that name theirs (``stages.<k>.data``; LLaVA: ``datasets={"captions": ..., "instruct": ...}``
    with ``dataset=None``), each with its own banks (``banks_dir/<name>/``).
    Returns the stage summaries (``stage.json`` of each stage). ``out`` is left as it was when
    it holds another run, or this run's output without ``resume``, and ``overwrite`` is not given
    (:class:`eim.training.run_dir.RunFolderError`; docs/design.md §8). ``resume``: reuse finished
    stages, continue the running one from its checkpoint. ``overwrite``: replace what ``out``
    holds (its old stages go once the new run's first stage has finished). ``banks_dir``: where feature
    banks live (default ``out/banks``); runs that share data and encoders can share one folder, since a
    bank is only reused when its fingerprint matches. ``shard_banks``: split banks by rows across
    processes (default: on when the recipe's ``eim.shard_banks`` or the ``EIM_SHARD_BANKS=1``
    environment variable says so). ``callbacks``: ``f(trainer, stage_index, step)`` after each
    optimiser step. ``val_datasets``: ``{name: dataset}`` held out for ``train.eval_every`` /
    ``train.eval_generate`` (default: each dataset's own validation split where its files hold one;
    :mod:`eim.training.validation`).
    """
    quiet_transformers()
    named = {**({MAIN: dataset} if dataset is not None else {}), **(datasets or {})}
    named = resolve_datasets(recipe, named)  # before any model loads: a missing --data NAME=PATH fails at once
    acc = accelerator or make_accelerator(recipe, out)  # first: it joins the process group of a launcher
    if shard_banks is None:  # the recipe's eim.shard_banks or the environment turns it on
        shard_banks = recipe.eim.shard_banks or (
            os.environ.get("EIM_SHARD_BANKS", "0").lower() not in ("", "0", "false", "no"))
    torch.manual_seed(recipe.train.seed)  # ST init and VPT prompts: a run is reproducible from its recipe
    model, tok = build_model(recipe)
    proc = load_image_processor(recipe.vision.name_or_path, model.vision.vision_model.config.image_size)
    banks = {name: BankProvider(recipe, ds, out, banks_dir=bank_dir(out, banks_dir, name), model=model, tokenizer=tok,
                                image_processor=proc, no_rebuild=no_rebuild, quiet=quiet, device=acc.device,
                                shard=bool(shard_banks))
             for name, ds in named.items()}
    trainer = Trainer(recipe, model, tok, proc, named, out, banks=banks, callbacks=callbacks, quiet=quiet,
                      accelerator=acc, val_datasets=val_datasets)
    return trainer.run(resume=resume, overwrite=overwrite)


def load_for_inference(checkpoint: PathLike) -> Inference:
    """The checkpoint's model (its tuned tensors loaded, in eval mode), tokenizer, image processor
    and recipe, as an :class:`Inference` (unpacks as a 4-tuple).

    ``checkpoint``: a run folder (its finished stages), a stage folder or a stage's ``model.safetensors``
    (that stage and the ones before it): each stage's file loaded over the pretrained models in stage
    order (:func:`eim.training.checkpoint.find_checkpoint`).
    """
    quiet_transformers()
    recipe, files = find_checkpoint(checkpoint)
    model, tok = build_model(recipe)
    load_checkpoint(model, files)
    model.eval()
    proc = load_image_processor(recipe.vision.name_or_path, model.vision.vision_model.config.image_size)
    return Inference(model, tok, proc, recipe)


def param_report(recipe: Recipe) -> dict[str, Any]:
    """``{"segments": {...}, "total", "trainable"}``: parameters per segment, built on the meta
    device (no weights, no memory: works for 7B-scale recipes)."""
    model, _ = build_model(recipe, device="meta")
    segs = segment_counts(model)
    return {"segments": segs, "total": sum(s["total"] for s in segs.values()),
            "trainable": sum(s["trainable"] for s in segs.values())}


__all__ = ["Inference", "load_for_inference", "param_report", "quiet_transformers", "train"]
