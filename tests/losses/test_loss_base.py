"""loss_base's target count is what the LM's loss averages over (eim.losses.loss_base)."""

import pytest
from helpers import caption_samples, tiny_recipe


@pytest.mark.parametrize("lm", ["gpt2", "llama"])  # no lead token / BOS lead
def test_target_count_equals_tokens_the_lm_loss_averages(tiny_dir, tmp_path, lm):
    from eim.losses import target_count
    from eim.model.multimodal import build_model
    from eim.model.splice import IGNORE, TextEncoder
    from eim.model.vision import load_image_processor
    from eim.training.collate import Collator

    recipe = tiny_recipe(tiny_dir, "clipcap_eim", lm=lm)
    model, tok = build_model(recipe)
    proc = load_image_processor(recipe.vision.name_or_path, model.vision.vision_model.config.image_size)
    samples = caption_samples(tmp_path, 3)
    samples[1].image = None  # a text-only row: its first token is not predicted by anything
    batch = Collator(TextEncoder(tok, 16), proc)(samples)
    _, _, _, labels = model.embed(batch)
    assert target_count(batch) == int((labels[:, 1:] != IGNORE).sum())
    text = Collator(TextEncoder(tok, 16), proc, mode="text")(samples)
    _, _, _, labels = model.embed(text)
    assert target_count(text) == int((labels[:, 1:] != IGNORE).sum())
