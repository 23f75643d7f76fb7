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
    """loss_base (eq. 1): autoregressive cross-entropy on the response tokens only."""

    name = "base"

    def forward(self, ctx):
        return {"loss_base": ctx.model(ctx.batch, features=ctx.features).loss}


LOSS_CLASSES = {"base": BaseLoss}


def build_losses(stage, recipe, banks=None, model=None):
    """``{name: (module, weight)}`` for a stage. ``banks``: callable name -> bank tensor info."""
    out = {}
    for name, weight in stage.losses.items():
        if name == "base":
            out[name] = (BaseLoss(), weight)
        else:
            from eim.eim_losses import build_eim_loss

            out[name] = (build_eim_loss(name, recipe, banks, model), weight)
    return out
