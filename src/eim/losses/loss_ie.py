"""loss_IE (docs/design.md §2): CLIP's [CLS] in the joint space against the bank of CLIP text features
of the captions (``text``). It trains CLIP's tuning parameters."""

from torch import nn

from eim.losses.bank_loss import BankLoss


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
            # pooled mode: the segment's own output layer; else CLIP's frozen projection, which
            # build_model keeps beside the segment for this loss (VisionTower.ie_projection)
            self.head = None if vt.visual_projection is not None else vt.ie_projection
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
