"""The training losses, each an ``nn.Module`` returning named terms (open_clip style).

``forward(ctx) -> {"loss_<name>": scalar}``; the trainer sums ``weight · term`` per stage, so a new
loss is one class and one weight. ``ctx`` is a :class:`StepContext`: it computes each shared
intermediate (CLIP features, ST tokens) at most once per step, and only when a loss asks for it —
so a stage never runs a segment it does not need (DESIGN §3).
"""

from functools import cached_property

import torch
from torch import nn


class StepContext:
    """Lazily computed intermediates of one training step."""

    def __init__(self, model, batch, need_cls=False):
        self.model, self.batch, self.need_cls = model, batch, need_cls

    @cached_property
    def _vision(self):
        b = self.batch
        if b.get("features") is not None:
            return b["features"], None
        if b.get("pixel_values") is None:
            return None, None
        if self.need_cls:
            return self.model.vision(b["pixel_values"], return_cls=True)
        return self.model.vision(b["pixel_values"]), None

    @property
    def features(self):
        """Vision output fed to the ST: [B, D] (pooled) or [B, T, D] (full)."""
        return self._vision[0]

    @property
    def cls(self):
        """``post_layernorm`` of CLIP's [CLS] [B, D] (the ``loss_IE`` query input)."""
        return self._vision[1]

    @cached_property
    def image_tokens(self):
        return self.model.image_tokens(self.features)  # [B, P, D_lm]


class BaseLoss(nn.Module):
    """loss_base (eq. 1): autoregressive cross-entropy on the response tokens only.

    A mean over the batch's target tokens; :meth:`count` gives their number before any forward
    (the trainer normalises by the global count over ranks and accumulation steps, so the
    gradient equals one process's on the whole global batch).
    """

    name = "base"

    def __init__(self, inject="splice"):
        super().__init__()
        self.inject = inject

    def count(self, batch):
        return target_count(batch, self.inject)

    def forward(self, ctx):
        out = ctx.model(ctx.batch, features=ctx.features)
        if self.count(ctx.batch) == 0:  # HF's mean over no token is nan; keep the graph, add 0
            return {"loss_base": out.logits.sum() * 0.0}
        return {"loss_base": out.loss}


def target_count(batch, inject="splice"):
    """Number of tokens loss_base averages over in ``batch`` (labels not IGNORE, as spliced).

    :func:`eim.model.splice.splice` never makes a row's first token a target; that token is the
    first text token exactly when no image prefix is spliced in front of it.
    """
    from eim.model.splice import IGNORE

    labels = batch["labels"]  # [B, Lt] right-padded
    has_prefix = batch.get("features") is not None or batch.get("pixel_values") is not None
    spliced = batch["has_image"] & has_prefix & (inject == "splice")  # [B]
    first = (labels[:, 0] != IGNORE) & ~spliced.to(labels.device)
    return int((labels != IGNORE).sum() - first.sum())


LOSS_CLASSES = {"base": BaseLoss}


def build_losses(stage, recipe, banks=None, model=None):
    """``{name: (module, weight)}`` for a stage. ``banks``: callable name -> bank tensor info."""
    out = {}
    for name, weight in stage.losses.items():
        if name == "base":
            out[name] = (BaseLoss(getattr(model, "inject", "splice")), weight)
        else:
            from eim.eim_losses import build_eim_loss

            out[name] = (build_eim_loss(name, recipe, banks, model), weight)
    return out
