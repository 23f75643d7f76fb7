"""The ``Accelerator`` a recipe trains with (docs/design.md §9): its precision and accumulation from the
recipe, distribution (DDP, FSDP, DeepSpeed, process count) from the launcher."""

import os
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import (DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs,
                               ProjectConfiguration)
from transformers.integrations import unset_hf_deepspeed_config

from eim.config import MIXED_PRECISION_OF
from eim.errors import ConfigError
from eim.training.features import reads_feature_cache


def make_accelerator(recipe, run_dir=None):
    """The ``Accelerator`` for a recipe: its precision and accumulation; distribution (DDP, FSDP,
    DeepSpeed, process count) comes from the launcher (``accelerate launch --config_file``,
    ``torchrun``). Collective timeouts are long: rank 0 may be writing a large bank meanwhile.
    ``train.report_to`` names its trackers, which write under ``run_dir/tracking``
    (:mod:`eim.training.tracking`).

    accelerate keeps one precision per process; a single process that trains recipes of another
    precision one after the other (a study, the tests) gets a fresh accelerator state each time."""
    precision = mixed_precision(recipe)
    state = AcceleratorState._shared_state
    if state and not PartialState().use_distributed and precision not in (None, state.get("_mixed_precision")):
        AcceleratorState._reset_state()
    # DeepSpeed runs on CPU processes too, over gloo: accelerate's cpu flag would turn it off, and
    # without a GPU it finds no backend of its own
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    cpu = not torch.cuda.is_available()
    group = InitProcessGroupKwargs(timeout=timedelta(hours=2), **({"backend": "gloo"} if cpu and deepspeed else {}))
    trackers = list(recipe.train.report_to)
    if trackers and run_dir is None:
        raise ConfigError("train.report_to needs the run folder (the trackers write under RUN/tracking)")
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=os.path.join(str(run_dir), "tracking")) \
        if trackers else None
    # a stage may leave a parameter it trains without a gradient (loss_LM reads the LLM's hidden states, so
    # an untied LM head gets none): DDP is told to look for them, and skips them as one process's optimiser does
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    acc = Accelerator(mixed_precision=precision, cpu=cpu and not deepspeed, log_with=trackers or None,
                      project_config=project, gradient_accumulation_steps=recipe.train.grad_accum,
                      kwargs_handlers=[group, ddp])
    if acc.num_processes > 1 and acc.distributed_type == DistributedType.NO:  # nothing would sync the gradients
        raise ConfigError(f"{acc.num_processes} processes but accelerate found no way to train them together "
                          "(distributed type NO); launch with a config accelerate can run on this machine")
    plugin = acc.state.deepspeed_plugin
    if plugin is not None:
        # eim builds whole modules, which it then tunes (LoRA, adapters, prompts) and from which it builds
        # banks; deepspeed.initialize partitions them when a stage is prepared. With the HF DeepSpeed config
        # left in place transformers would partition them at construction (zero3_init_flag, which
        # `accelerate launch --deepspeed_config_file` turns on for a ZeRO-3 file), so it is taken away
        if plugin.zero3_init_flag:
            plugin.zero3_init_flag = False
            if acc.is_main_process:
                print("eim: zero3_init_flag is on; eim builds each process's modules whole (LoRA, adapters and "
                      "feature banks need whole weights) and ZeRO-3 partitions them when a stage starts "
                      "(--zero3_init_flag false silences this)", flush=True)
        unset_hf_deepspeed_config()
    return acc


def zero_stage(acc):
    """The DeepSpeed ZeRO stage ``acc`` runs (0 without DeepSpeed)."""
    plugin = acc.state.deepspeed_plugin
    return int(plugin.zero_stage or 0) if plugin is not None else 0


def check_partitioned_reads(recipe, partitioned):
    """Refuse what would read CLIP's weights after ZeRO-3 partitioned them (``partitioned``: the run is
    ZeRO-3): the frozen-CLIP feature cache of a stage after the first. A stage's parameters stay
    partitioned after it (docs/design.md §9); the first stage's cache is computed before any is."""
    if not partitioned or not recipe.train.cache_clip_features:
        return
    late = [s.name for k, s in enumerate(recipe.stages) if k and reads_feature_cache(recipe, s)]
    if late:
        raise ConfigError(f"train.cache_clip_features under ZeRO-3: stage(s) {', '.join(late)} would compute CLIP's "
                          "features after an earlier stage has partitioned CLIP's weights across the processes; pass "
                          "--train.cache_clip_features false (CLIP runs in the loop), or train with deepspeed_zero2")


def mixed_precision(recipe):
    """The recipe's ``train.mixed_precision``; ``auto``: the segments' 16-bit dtype when one has it,
    else what the launcher's config says, else bf16 on CUDA that supports it, else no."""
    mode = recipe.train.mixed_precision
    if mode != "auto":
        return mode
    low = {d for d in (recipe.vision.dtype, recipe.lm.dtype) if d != "float32"}
    if low:
        return MIXED_PRECISION_OF[low.pop()]
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):  # `accelerate launch` with a config: it decides
        return None
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"
