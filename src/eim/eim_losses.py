"""EIM's three contrastive losses (DESIGN §2), each an InfoNCE against a whole-dataset bank.

Every loss returns ``{"loss_<name>": scalar}`` and reads shared intermediates from the step
context (:class:`eim.losses.StepContext`). Queries carry the gradient; banks are frozen.

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

from eim.contrastive import bank_infonce


class _BankLoss(nn.Module):
    name = None

    def __init__(self, recipe, banks):
        super().__init__()
        self.recipe, self.banks = recipe, banks

    def infonce(self, query, index):
        e = self.recipe.eim
        bank = self.banks.get(self.bank_name)
        exclude = None
        if e.same_image == "mask":
            g = self.banks.groups()
            exclude = (g[index.cpu()].to(query.device), g.to(query.device))
        return bank_infonce(query, bank.to(query.device), index, tau=e.tau, exclude=exclude,
                            normalized=True, chunk_size=e.chunk_size)

    def _zero(self, ctx):
        p = next(ctx.model.parameters())
        return {f"loss_{self.name}": p.new_zeros(()) * 0.0}


class STLoss(_BankLoss):
    """loss_ST: ST output averaged over tokens vs the mean LLM-embedding bank Ke."""

    name, bank_name = "st", "embed"

    def forward(self, ctx):
        has = ctx.batch["has_image"]
        if not has.any():
            return self._zero(ctx)
        q = ctx.image_tokens.mean(dim=1)  # [B, D_lm]
        return {"loss_st": self.infonce(q[has], ctx.batch["index"][has])}


class LMLoss(_BankLoss):
    """loss_LM: tuned LLM's last-token hidden state vs the frozen LLM's [EOS] bank Kb."""

    name, bank_name = "lm", "lm"

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
        return {"loss_lm": self.infonce(h, b["index"])}


class IELoss(_BankLoss):
    """loss_IE: CLIP.visual [CLS] mapped to the joint space vs the CLIP.text [EOS] bank Kt.

    ``ie_head: clip_projection`` uses CLIP's own frozen ``visual_projection`` (used only by this
    loss; the ST input still skips it, DESIGN §2); ``linear`` learns a new head, trained here.
    """

    name, bank_name = "ie", "text"

    def __init__(self, recipe, banks, model):
        super().__init__(recipe, banks)
        vt = model.vision
        if recipe.eim.ie_head == "clip_projection":
            if vt.visual_projection is not None:
                self.head = None  # pooled mode: the segment's own output layer
            else:
                from transformers import CLIPModel

                clip = CLIPModel.from_pretrained(recipe.vision.name_or_path, dtype=torch.float32)
                self.head = clip.visual_projection.requires_grad_(False)
                del clip
        else:
            d_text = banks.get("text").shape[1]
            self.head = nn.Linear(vt.vision_model.config.hidden_size, d_text)

    def forward(self, ctx):
        has = ctx.batch["has_image"]
        if not has.any() or ctx.cls is None:
            return self._zero(ctx)
        head = self.head if self.head is not None else ctx.model.vision.visual_projection
        q = head(ctx.cls[has])  # [B', D_text]
        return {"loss_ie": self.infonce(q, ctx.batch["index"][has])}


def build_eim_loss(name, recipe, banks, model):
    if banks is None:
        raise ValueError(f"loss {name!r} needs feature banks")
    if name == "st":
        return STLoss(recipe, banks)
    if name == "lm":
        return LMLoss(recipe, banks)
    if name == "ie":
        return IELoss(recipe, banks, model)
    raise ValueError(f"unknown loss {name!r}")
