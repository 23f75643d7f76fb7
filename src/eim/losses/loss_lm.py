"""loss_LM (docs/design.md §2): the tuned LLM's final hidden state at the last token against the bank of
the frozen original LLM's state at [EOS] (``lm``). It trains the LLM's trainable parameters."""

import inspect

import torch

from eim.losses.bank_loss import BankLoss


class LMLoss(BankLoss):
    """loss_LM: tuned LLM's last-token hidden state vs the frozen LLM's [EOS] bank Kb."""

    name, bank_name = "lm", "lm"
    needs_image = False  # text mode reads no image; multimodal mode splices one when there is one

    @staticmethod
    def _lm_params(lm):
        return inspect.signature(lm.forward).parameters

    def forward(self, ctx):
        b, model = ctx.batch, ctx.model
        if "bank_ids" in b:  # a templated stage: the query reads the bank's own bare text (docs/design.md §2)
            b = {**b, "input_ids": b["bank_ids"], "text_lengths": b["bank_lengths"], "n_lead": b["bank_lead"], "labels": None}
        if self.recipe.eim.lm_query_input == "text":
            ids, lengths = b["input_ids"], b["text_lengths"]
            mask = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()
            kw = {"input_ids": ids, "attention_mask": mask}
            last = lengths - 1
        else:  # multimodal: [lead; ST(image); instruction; response; EOS]
            embeds, mask, pos, _ = model.embed(b, features=ctx.features, with_labels=False)
            kw = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos}
            last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # last real position (any padding side)
        if "logits_to_keep" in self._lm_params(model.lm):  # no vocabulary logits for every position (2 GB
            kw["logits_to_keep"] = 1  # of bf16 at 16 × 2,048): the query reads the final hidden state only
        # the whole model, not its decoder alone: the tuning modes' per-call hooks sit on it
        states = model.lm(**kw, output_hidden_states=True, use_cache=False).hidden_states[-1]
        h = states[torch.arange(last.shape[0], device=last.device), last]  # [B, D]
        rows = self.query_rows(b)
        return {"loss_lm": self.infonce(h[rows], b["index"][rows], like=h)}
