"""The bank losses and the loss registry (eim.losses): one list of losses and the banks they read."""

import pytest

from eim.banks import BankProvider
from eim.cli import main
from eim.config import LOSS_NAMES
from eim.losses import BANK_NAMES, LOSS_BANK, LOSSES as REGISTRY, IELoss, LMLoss, STLoss


def test_registry_is_the_one_list_of_losses_and_banks():
    assert tuple(REGISTRY) == LOSS_NAMES == ("base", "st", "lm", "ie")
    assert LOSS_BANK == {"st": "embed", "lm": "lm", "ie": "text"}
    assert {c.name: c.bank_name for c in (STLoss, LMLoss, IELoss)} == LOSS_BANK
    assert BankProvider.NAMES == BANK_NAMES


def test_banks_command_offers_the_registry_banks(capsys):
    with pytest.raises(SystemExit):
        main(["banks", "build", "clipcap_eim", "--data", "D", "--out", "R", "--bank", "nope"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and all(name in err for name in BANK_NAMES)


def test_lm_query_reads_the_bank_text_on_samples_longer_than_max_length(tiny_dir, data, tmp_path):
    """loss_LM in text mode: for samples cut at ``train.max_length`` the tuned LLM (still the
    original at step 0, in eval mode) reads the bank's own tokens, so its query *is* the bank row."""
    import torch

    from eim.losses import StepContext
    from eim.model.multimodal import build_model
    from eim.model.splice import TextEncoder
    from eim.training.collate import Collator
    from helpers import tiny_recipe

    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides={"train.max_length": 5})
    model, tok = build_model(recipe)
    model.eval()
    prov = BankProvider(recipe, data, tmp_path, quiet=True)
    loss = LMLoss(recipe, prov)
    samples = [data[i] for i in range(6)]
    batch = Collator(TextEncoder(tok, 5), None, mode="text")(samples)
    assert (batch["text_lengths"] == 5).all() and (batch["input_ids"][:, -1] == tok.eos_token_id).all()
    got = {}
    loss.infonce = lambda q, index, like=None: got.setdefault("q", q.detach()).sum()
    loss(StepContext(model, batch))
    cos = torch.nn.functional.cosine_similarity(got["q"], prov.get("lm")[batch["index"]].float(), dim=1)
    assert (cos > 0.999).all(), cos
