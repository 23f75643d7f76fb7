"""The ``Accelerator`` a recipe trains with (docs/design.md §9): its precision and accumulation from the
recipe, distribution (DDP, FSDP, DeepSpeed, process count) from the launcher."""

import os
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs


def make_accelerator(recipe):
    """The ``Accelerator`` for a recipe: its precision and accumulation; distribution (DDP, FSDP,
    DeepSpeed, process count) comes from the launcher (``accelerate launch --config_file``,
    ``torchrun``). Collective timeouts are long: rank 0 may be writing a large bank meanwhile."""
    return Accelerator(mixed_precision=_mixed_precision(recipe.train.mixed_precision),
                       cpu=not torch.cuda.is_available(), gradient_accumulation_steps=recipe.train.grad_accum,
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))])


def _mixed_precision(mode):
    if mode != "auto":
        return mode
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):  # `accelerate launch` with a config: it decides
        return None
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"
