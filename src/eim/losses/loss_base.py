"""loss_base (docs/design.md §2, the paper's eq. 1): cross-entropy on the response tokens only."""

from torch import nn

from eim.model.splice import IGNORE


class BaseLoss(nn.Module):
    """loss_base: autoregressive cross-entropy on the response tokens only.

    A mean over the batch's target tokens; :meth:`count` gives their number before any forward
    (the trainer normalises by the global count over ranks and accumulation steps, so the
    gradient equals one process's on the whole global batch). ``bank_name`` is None: no bank.
    """

    name, bank_name = "base", None

    def __init__(self, recipe=None, banks=None, model=None):
        super().__init__()
        self.inject = getattr(model, "inject", "splice")

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
    labels = batch["labels"]  # [B, Lt] right-padded
    has_prefix = batch.get("features") is not None or batch.get("pixel_values") is not None
    spliced = batch["has_image"] & has_prefix & (inject == "splice")  # [B]
    first = (labels[:, 0] != IGNORE) & ~spliced.to(labels.device)
    return int((labels != IGNORE).sum() - first.sum())
