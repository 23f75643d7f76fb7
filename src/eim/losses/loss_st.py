"""loss_ST (docs/design.md §2): the ST's output, averaged over its tokens, against the bank of mean
LLM input embeddings (``embed``). It trains the ST."""

from eim.losses.bank_loss import BankLoss


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
