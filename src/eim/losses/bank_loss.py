"""The base class of EIM's three contrastive losses (docs/design.md §2), each an InfoNCE against a
whole-dataset bank: :class:`~eim.losses.loss_st.STLoss`, :class:`~eim.losses.loss_lm.LMLoss`,
:class:`~eim.losses.loss_ie.IELoss`.

Every loss returns ``{"loss_<name>": scalar}`` and reads shared intermediates from the step
context (:class:`eim.losses.context.StepContext`). Queries carry the gradient; banks are frozen.

==========  =========================================================  ======================
loss        query  [B, d]                                              bank  [N, d]
==========  =========================================================  ======================
loss_IE     CLIP [CLS] -> post_layernorm -> visual_projection          Kt: CLIP.text [EOS]
loss_ST     mean over tokens of ST(visual features)                    Ke: mean LLM embeddings
loss_LM     tuned LLM's final hidden state at the last text token      Kb: frozen LLM at [EOS]
==========  =========================================================  ======================

Samples without an image (text-only ScienceQA/LLaVA/Alpaca rows) are left out of loss_IE and
loss_ST, which need an image; loss_LM in ``lm_query_input: text`` mode uses every row.
"""

from typing import Protocol

import torch
from torch import nn

from eim.losses.infonce import bank_infonce, sharded_bank_infonce


class BankSource(Protocol):
    """Where a loss reads its bank (:class:`eim.banks.BankProvider`, or a test's own): ``get(name)``
    is the bank ``[N, d]`` with unit rows (row i = dataset index i), or this rank's rows
    ``[shard_offset(name), +n)`` when ``sharded``; ``groups()`` one id per distinct image ``[N]``
    (``eim.same_image: mask``)."""

    sharded: bool

    def get(self, name: str) -> torch.Tensor: ...

    def shard_offset(self, name: str) -> int: ...

    def groups(self) -> torch.Tensor: ...


class BankLoss(nn.Module):
    """Shared InfoNCE plumbing. A loss is a mean over its queries; :meth:`count` says how many a
    batch has (before any forward), so the trainer can normalise by the global count across
    ranks and accumulation steps (:mod:`eim.training.trainer`). ``batch["valid"]`` (when present)
    marks the rows that are real samples: a rank whose share of a short last batch is empty gets
    a padding row, run through the model but excluded from every loss.

    With a row-sharded provider (``banks.sharded``) the loss is
    :func:`eim.losses.infonce.sharded_bank_infonce`, a collective: every rank calls it every step,
    with an empty query when it has none.
    """

    name = bank_name = None  # set by each loss: its registry name and the bank it reads
    needs_image = True

    def __init__(self, recipe, banks, model=None):
        super().__init__()
        if banks is None:
            raise ValueError(f"loss {self.name!r} needs feature banks")
        self.recipe, self.banks = recipe, banks
        self._device_bank = None  # (device, tensor): the bank moved once, not every step

    def _bank(self, device):
        if self._device_bank is None or self._device_bank[0] != device:
            self._device_bank = (device, self.banks.get(self.bank_name).to(device))
        return self._device_bank[1]

    def query_rows(self, batch):
        """Bool [B]: rows that are queries of this loss."""
        rows = batch["valid"] if "valid" in batch else torch.ones_like(batch["has_image"])
        return rows & batch["has_image"] if self.needs_image else rows

    def count(self, batch):
        return int(self.query_rows(batch).sum())

    def infonce(self, query, index, like=None):
        """Mean InfoNCE of ``query`` [B', d] (B' may be 0) against this loss's bank.

        ``like``: a graph-connected tensor to build the zero from when there is no query, so
        every trainable parameter that ran still gets a (zero) gradient (DDP expects that).
        """
        e = self.recipe.eim
        sharded = self.banks.sharded
        if query is None:
            d = self.banks.get(self.bank_name).shape[1]
            query = torch.zeros(0, d, device=index.device)
        if query.shape[0] == 0 and not sharded:
            return (like.sum() if like is not None else query.sum()) * 0.0
        dev = query.device
        bank = self._bank(dev)
        index = index.to(dev)
        offset = self.banks.shard_offset(self.bank_name) if sharded else 0
        exclude = None
        if e.same_image == "mask":
            g = self.banks.groups()
            exclude = (g[index.cpu()].to(dev), g[offset : offset + bank.shape[0]].to(dev))
        # the softmax runs in float32 even under mixed-precision autocast (docs/design.md §2)
        with torch.autocast(dev.type, enabled=False):
            if sharded:
                loss = sharded_bank_infonce(query, bank, offset, index, tau=e.tau, exclude=exclude,
                                            normalized=True, chunk_size=e.chunk_size)
            else:
                loss = bank_infonce(query, bank, index, tau=e.tau, exclude=exclude, normalized=True,
                                    chunk_size=e.chunk_size)
        if query.shape[0] == 0 and like is not None:
            loss = loss + like.sum() * 0.0
        return loss
