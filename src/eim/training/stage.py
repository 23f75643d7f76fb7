"""One stage of a run (docs/design.md §3): its forward module, its folder, its length and its data."""

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from eim.config import MAIN, SEGMENTS, Recipe, StageConfig
from eim.data.dataset import Dataset
from eim.errors import DataError
from eim.losses import StepContext
from eim.model.lm import checkpointing_layers


def unfreeze(model: nn.Module, trainable: list[str], float32: bool = True) -> list[nn.Parameter]:
    """Freeze ``model``, then unfreeze the tunable parameters of the ``trainable`` segments, cast to
    float32 (the optimiser updates float32 weights) unless ``float32`` is False (DeepSpeed keeps the
    float32 master copy itself; docs/design.md §9). Returns them in segment order."""
    model.requires_grad_(False)
    params = []
    for seg in trainable:
        for p in model.segment_tunable(seg):
            if not p.requires_grad:
                if float32 and p.dtype != torch.float32:
                    p.data = p.data.float()
                p.requires_grad_(True)
                params.append(p)
    return params


def set_stage_modes(model: nn.Module, step: nn.Module, trainable: list[str], checkpointing: bool) -> None:
    """Train mode for the step (its segments and losses), eval mode for the frozen segments
    (docs/design.md §3): a frozen CLIP or LLM runs as it was pretrained, without dropout, exactly as
    its feature bank and cached features were computed. With ``checkpointing`` a frozen LLM's blocks,
    which gradients flow through, are recomputed too."""
    step.train()
    for seg in SEGMENTS:
        if seg not in trainable:
            getattr(model, seg).eval()
    if checkpointing:
        checkpointing_layers(model.lm)


class StageStep(nn.Module):
    """One stage's forward — the model and the stage's losses — as the single module accelerate
    wraps (DDP/FSDP/DeepSpeed only see calls to the wrapped module's ``forward``).

    ``forward(batch) -> {"loss_<name>": local mean}``. Every trainable parameter takes part in each
    backward on every rank, as DDP, FSDP and ZeRO-3 expect: with several processes a batch without
    images carries zero images (:class:`eim.training.collate.Collator`, ``zero_images``), so the
    vision tower and the projector run on every rank and the rows without an image take no position
    (docs/design.md §9). ``config``: the LLM's, which accelerate reads to fill a DeepSpeed config's
    ``"auto"`` bucket sizes.
    """

    def __init__(self, model, losses, need_cls=False):
        super().__init__()
        self.model = model
        self.losses = nn.ModuleDict({n: m for n, (m, _) in losses.items()})
        self.need_cls = need_cls
        # FSDP's transformer auto-wrap reads _no_split_modules: the blocks of the HF models inside
        self._block_names = sorted({c for m in model.modules() for c in (getattr(m, "_no_split_modules", None) or ())})

    @property
    def _no_split_modules(self):
        """Block classes present now (FSDP2 renames a wrapped class X to FSDPX)."""
        present = {type(m).__name__ for m in self.model.modules()}
        return sorted(n for b in self._block_names for n in (b, "FSDP" + b) if n in present)

    @property
    def config(self):
        return self.model.lm.config

    def set_stage(self, losses, need_cls):
        self.losses = nn.ModuleDict({n: m for n, (m, _) in losses.items()})
        self.need_cls = need_cls

    def forward(self, batch):
        ctx = StepContext(self.model, batch, need_cls=self.need_cls)
        terms = {}
        for m in self.losses.values():
            terms.update(m(ctx))
        return terms


@dataclass
class StageRun:
    """The state of one running stage, built by :meth:`eim.training.trainer.Trainer._setup_stage`."""

    k: int  # its index in the recipe's stages
    stage: StageConfig
    dir: Path  # its .partial folder while it runs
    losses: dict[str, tuple[nn.Module, float]]  # name -> (loss module, weight)
    trainable: list[nn.Parameter]  # the model's parameters this stage trains
    loss_params: list[nn.Parameter]  # a loss's own trainable parameters (e.g. a linear loss_IE head)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    total: int  # optimiser steps
    step: int = 0  # optimiser steps done
    resuming: bool = False
    rng: Optional[dict[str, torch.Tensor]] = None  # the RNG state to resume with (from the checkpoint)
    t0: float = field(default_factory=time.time)
    param_names: list[str] = field(default_factory=list)  # the names of ``trainable`` in the model
    step_p: Any = None  # the prepared StageStep (its DDP/FSDP/DeepSpeed wrapper)
    opt_p: Any = None  # the prepared optimizer (accelerate's wrapper)

    @property
    def ckpt(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def names(self) -> list[str]:
        return list(self.losses)

    @property
    def weights(self) -> list[float]:
        return [self.losses[n][1] for n in self.losses]


def stage_dir(run_dir: Path, k: int, stage: StageConfig) -> Path:
    return Path(run_dir) / f"stage-{k}-{stage.name}"


def stage_number(path: Path) -> int:
    """k of ``stage-<k>-<name>`` (sorts stage 10 after stage 9)."""
    try:
        return int(Path(path).name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def stage_steps(stage: StageConfig, n_samples: int, recipe: Recipe, world: int = 1) -> int:
    """Optimiser steps of a stage (``steps`` or ``epochs`` × global micro-batches / accumulation)."""
    if stage.steps is not None:
        return stage.steps
    batch, accum = recipe.stage_batch(stage)
    micro = math.ceil(n_samples / (batch * world))
    return max(1, math.ceil(stage.epochs * micro / accum))


def collate_mode(recipe: Recipe, stage: StageConfig) -> str:
    """How a stage's batches are collated (:class:`eim.training.collate.Collator`): ``text`` (the bare
    layout and no image) for a loss_LM-only stage whose query reads text, else ``train``."""
    return "text" if set(stage.losses) == {"lm"} and recipe.eim.lm_query_input == "text" else "train"


def stage_data_name(stage: StageConfig) -> str:
    """The name of the dataset ``stage`` trains on (its ``data``, else :data:`MAIN`)."""
    return stage.data or MAIN


def resolve_datasets(recipe: Recipe, data: Mapping[str, Dataset]) -> dict[str, Dataset]:
    """``{name: dataset}`` a run trains on, checked against its stages (docs/design.md §3).

    ``data``: ``{name: dataset}`` (``eim train --data NAME=PATH ...``; :data:`eim.config.MAIN` is the
    dataset of every stage that names none, a plain ``--data PATH``). A stage's dataset must be
    given, and every dataset given must be read by some stage.
    """
    datasets = dict(data)
    wanted = {}
    for s in recipe.stages:  # name -> the first stage that reads it
        wanted.setdefault(stage_data_name(s), s)
    missing = [n for n in wanted if n not in datasets]
    if missing:
        given = ", ".join(sorted(datasets)) or "none"
        needs = "; ".join(f"stage {wanted[n].name!r} trains on {n!r}" for n in missing)
        how = " ".join(f"--data {n}=PATH" for n in missing)
        raise DataError(f"recipe {recipe.name}: {needs}, which was not given (given: {given})",
                        remedy=f"pass {how}" + (" (a plain --data PATH is the dataset of stages that name none)"
                                                if MAIN in datasets else ""))
    unused = [n for n in datasets if n not in wanted]
    if unused:
        raise DataError(f"recipe {recipe.name}: no stage trains on {', '.join(map(repr, unused))} (its stages read "
                        f"{', '.join(map(repr, wanted))})", remedy="drop that --data or name it as a stage's data")
    return datasets
