"""The step context every loss reads from (docs/design.md §3).

A :class:`StepContext` computes each shared intermediate of one training step (CLIP features,
the [CLS] query input, ST tokens) at most once, and only when a loss asks for it — so a stage
never runs a segment it does not need.
"""

from functools import cached_property


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
