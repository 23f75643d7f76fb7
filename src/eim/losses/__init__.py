"""The training losses, each an ``nn.Module`` returning named terms (docs/design.md §2).

``forward(ctx) -> {"loss_<name>": scalar}`` where ``ctx`` is a
:class:`eim.losses.context.StepContext`; the trainer sums ``weight · term`` per stage, so a new
loss is one class here and one weight in a recipe. :data:`LOSSES` is the registry of the classes:
the feature bank each loss reads (its class's ``bank_name``) and ``eim banks build`` derive from
it; its names are :data:`eim.config.LOSS_NAMES`, the names a recipe may use (a test keeps the two
equal).

=========  =========================================  ======================================
name       class                                      bank
=========  =========================================  ======================================
``base``   :class:`~eim.losses.loss_base.BaseLoss`    —
``st``     :class:`~eim.losses.loss_st.STLoss`        ``embed`` (mean LLM input embeddings)
``lm``     :class:`~eim.losses.loss_lm.LMLoss`        ``lm`` (frozen LLM at [EOS])
``ie``     :class:`~eim.losses.loss_ie.IELoss`        ``text`` (CLIP.text at [EOS])
=========  =========================================  ======================================
"""

from eim.losses.bank_loss import BankLoss, BankSource
from eim.losses.context import StepContext
from eim.losses.infonce import BankInfoNCE, bank_infonce, naive_bank_infonce, sharded_bank_infonce
from eim.losses.loss_base import BaseLoss, target_count
from eim.losses.loss_ie import IELoss
from eim.losses.loss_lm import LMLoss
from eim.losses.loss_st import STLoss

LOSSES = {cls.name: cls for cls in (BaseLoss, STLoss, LMLoss, IELoss)}  # in a stage's usual order
LOSS_BANK = {name: cls.bank_name for name, cls in LOSSES.items() if cls.bank_name}  # loss -> bank
BANK_NAMES = tuple(LOSS_BANK.values())


def build_losses(stage, recipe, banks=None, model=None):
    """``{name: (module, weight)}`` for a stage. ``banks``: a :class:`eim.banks.BankProvider`."""
    return {name: (LOSSES[name](recipe, banks, model), weight) for name, weight in stage.losses.items()}


def stage_banks(stage):
    """The bank names one stage's losses read, sorted."""
    return sorted({LOSS_BANK[n] for n in stage.losses if n in LOSS_BANK})


__all__ = ["BANK_NAMES", "LOSSES", "LOSS_BANK", "BankInfoNCE", "BankLoss", "BankSource", "BaseLoss", "IELoss", "LMLoss",
           "STLoss", "StepContext", "bank_infonce", "build_losses", "naive_bank_infonce",
           "sharded_bank_infonce", "stage_banks", "target_count"]
