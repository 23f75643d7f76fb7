"""The bank losses and the loss registry (eim.losses): one list of losses and the banks they read."""

import pytest

from eim.banks import BankProvider
from eim.cli import main
from eim.config import LOSSES
from eim.losses import BANK_NAMES, LOSS_BANK, LOSSES as REGISTRY, IELoss, LMLoss, STLoss


def test_registry_is_the_one_list_of_losses_and_banks():
    assert tuple(REGISTRY) == LOSSES == ("base", "st", "lm", "ie")
    assert LOSS_BANK == {"st": "embed", "lm": "lm", "ie": "text"}
    assert {c.name: c.bank_name for c in (STLoss, LMLoss, IELoss)} == LOSS_BANK
    assert BankProvider.NAMES == BANK_NAMES


def test_banks_command_offers_the_registry_banks(capsys):
    with pytest.raises(SystemExit):
        main(["banks", "build", "clipcap_eim", "--data", "D", "--out", "R", "--bank", "nope"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and all(name in err for name in BANK_NAMES)
