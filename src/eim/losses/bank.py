"""EIM's three contrastive losses (docs/design.md §2), each an InfoNCE against a whole-dataset bank.

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

import torch
from torch import nn
from transformers import CLIPModel

from eim.losses.infonce import bank_infonce, sharded_bank_infonce


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
        sharded = getattr(self.banks, "sharded", False)
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


class STLoss(BankLoss):
    """loss_ST: ST output averaged over tokens vs the mean LLM-embedding bank Ke."""

    name, bank_name = "st", "embed"

    def forward(self, ctx):
        b = ctx.batch
        rows = self.query_rows(b)
        q = None if ctx.features is None else ctx.image_tokens.mean(dim=1)  # [B, D_lm]
        if q is None:
            return {"loss_st": self.infonce(None, b["index"][rows])}
        return {"loss_st": self.infonce(q[rows], b["index"][rows], like=q)}


class LMLoss(BankLoss):
    """loss_LM: tuned LLM's last-token hidden state vs the frozen LLM's [EOS] bank Kb."""

    name, bank_name = "lm", "lm"
    needs_image = False  # text mode reads no image; multimodal mode splices one when there is one

    def forward(self, ctx):
        b, model = ctx.batch, ctx.model
        if self.recipe.eim.lm_query_input == "text":
            ids, lengths = b["input_ids"], b["text_lengths"]
            mask = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()
            out = model.lm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            last = lengths - 1
        else:  # multimodal: [lead; ST(image); instruction; response; EOS]
            embeds, mask, pos, _ = model.embed(b, features=ctx.features, with_labels=False)
            out = model.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                           output_hidden_states=True, use_cache=False)
            last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # last real position (any padding side)
        h = out.hidden_states[-1][torch.arange(last.shape[0], device=last.device), last]  # [B, D]
        rows = self.query_rows(b)
        return {"loss_lm": self.infonce(h[rows], b["index"][rows], like=h)}


class IELoss(BankLoss):
    """loss_IE: CLIP.visual [CLS] mapped to the joint space vs the CLIP.text [EOS] bank Kt.

    ``ie_head: clip_projection`` uses CLIP's own frozen ``visual_projection`` (used only by this
    loss; the ST input still skips it, docs/design.md §2); ``linear`` learns a new head, trained here.
    """

    name, bank_name = "ie", "text"

    def __init__(self, recipe, banks, model):
        super().__init__(recipe, banks, model)
        vt = model.vision
        if recipe.eim.ie_head == "clip_projection":
            if vt.visual_projection is not None:
                self.head = None  # pooled mode: the segment's own output layer
            else:
                clip = CLIPModel.from_pretrained(recipe.vision.name_or_path, dtype=torch.float32)
                self.head = clip.visual_projection.requires_grad_(False)
                del clip
        else:
            d_text = banks.get("text").shape[1]
            self.head = nn.Linear(vt.vision_model.config.hidden_size, d_text)

    def count(self, batch):
        # the [CLS] query exists only when CLIP runs in the loop (pixels, not cached features)
        return super().count(batch) if batch.get("pixel_values") is not None else 0

    def forward(self, ctx):
        b = ctx.batch
        rows = self.query_rows(b)
        if ctx.cls is None:
            return {"loss_ie": self.infonce(None, b["index"][rows])}
        head = self.head if self.head is not None else ctx.model.vision.visual_projection
        q = head(ctx.cls.to(head.weight.dtype))  # [B, D_text]; CLIP may run in another precision
        return {"loss_ie": self.infonce(q[rows], b["index"][rows], like=q)}
