"""A stage's batches (docs/design.md §9): which samples each step sees, how they are collated, and the
data-loader workers that prepare them."""

import os
from typing import Any, Optional

import torch

from eim.config import Recipe, StageConfig
from eim.data.dataset import Dataset
from eim.model.splice import TextEncoder
from eim.training.collate import Collator
from eim.training.sampler import EpochBatches, Rows, ValidCollate, modality_lengths
from eim.training.stage import collate_mode

MAX_AUTO_WORKERS = 4  # per process, as LLaVA-1.5's scripts (dataloader_num_workers 4)


def loader_workers(setting: str, cuda: bool) -> int:
    """``train.num_workers``: a number, or ``auto``: 0 without CUDA (CPU runs and the tests decode in
    the training loop, no worker start-up), else up to 4 per process, as the CPUs allow."""
    if setting != "auto":
        return int(setting)
    if not cuda:
        return 0
    per_process = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
    return max(1, min(MAX_AUTO_WORKERS, per_process - 1))


def stage_loader(recipe: Recipe, stage: StageConfig, k: int, dataset: Dataset, tokenizer: Any, image_processor: Any,
                 total: int, step: int, world: int, rank: int, features: Optional[dict] = None,
                 cuda: bool = False, image_positions: int = 0) -> torch.utils.data.DataLoader:
    """This rank's batches of stage ``k`` from optimiser step ``step`` of ``total`` on: the stage's
    micro-batch and accumulation, its conversation template, cached CLIP ``features`` when given,
    the bare layout for a text-mode loss_LM stage, LLaVA's modality-length order with
    ``train.group_by``; with several processes a batch without images carries zero images, so every
    rank runs the same modules (docs/design.md §9); ``image_positions``: an image's positions in the LLM
    input, which ``train.max_length`` counts under a rendered template (§5). Deterministic from the
    position, workers or not, so a resumed run sees the batches it would have."""
    batch, accum = recipe.stage_batch(stage)
    collate = ValidCollate(Collator(TextEncoder.for_recipe(tokenizer, recipe, stage, image_positions=image_positions),
                                    image_processor,
                                    mode=collate_mode(recipe, stage), features=features,
                                    bank_text="lm" in stage.losses, image_aspect_ratio=recipe.data.image_aspect_ratio,
                                    zero_images=world > 1))
    lengths = modality_lengths(dataset) if recipe.train.group_by == "modality_length" else None
    sampler = EpochBatches(len(dataset), batch, recipe.train.seed + 7919 * k, total * accum, start=step * accum,
                           world=world, rank=rank, lengths=lengths)
    workers = loader_workers(recipe.train.num_workers, cuda)
    return torch.utils.data.DataLoader(Rows(dataset), batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                       pin_memory=cuda and workers > 0, persistent_workers=workers > 0)
