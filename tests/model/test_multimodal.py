"""The three-segment model: reference logits, padding, generation, state-dict keys (eim.model.multimodal)."""

import pytest
import torch
from helpers import ListDataset, caption_samples, tiny_recipe
from transformers import GPT2LMHeadModel

from eim.model.multimodal import build_model
from eim.model.splice import TextEncoder
from eim.model.vision import load_image_processor
from eim.training.collate import Collator


def test_clipcap_logits_equal_hand_assembled_gpt2(clipcap, tmp_path):
    model, tok, proc = clipcap
    samples = caption_samples(tmp_path, 2)
    batch = Collator(TextEncoder(tok, 32), proc)(samples)
    with torch.no_grad():
        out = model(batch)
        pooled = model.vision(batch["pixel_values"])  # [B, 24]
        prefix = model.projector.mlp(pooled).view(2, -1, model.lm.config.n_embd)  # by hand: MLP + reshape
        ref = GPT2LMHeadModel.from_pretrained(model.lm.name_or_path).eval()
        for b in range(2):
            n = int(batch["text_lengths"][b])
            tokens = ref.transformer.wte(batch["input_ids"][b, :n])
            logits = ref(inputs_embeds=torch.cat([prefix[b], tokens])[None]).logits[0]
            got = out.logits[b, : logits.shape[0]] if model.padding_side == "right" else out.logits[b, -logits.shape[0]:]
            torch.testing.assert_close(got, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lm", ["gpt2", "llama"])
def test_padding_side_does_not_change_loss(tiny_dir, tmp_path, lm):
    torch.manual_seed(0)
    model, tok = build_model(tiny_recipe(tiny_dir, "clipcap_eim", lm=lm))
    model.eval()
    samples = caption_samples(tmp_path, 4)
    samples[1].instruction = "describe the picture in a few words please"  # lengths differ
    samples[2].image = None  # a text-only sample in the same batch
    batch = Collator(TextEncoder(tok, 32), load_image_processor(tiny_dir / "clip"))(samples)
    losses = []
    for side in ("right", "left"):
        model.padding_side = side
        with torch.no_grad():
            losses.append(model(batch).loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_batched_greedy_generation_equals_one_by_one(clipcap, tmp_path):
    model, tok, proc = clipcap
    samples = caption_samples(tmp_path, 3)
    samples[1].instruction = "longer prompt here"
    coll = Collator(TextEncoder(tok, 32), proc, mode="prompt")
    together = model.generate(coll(samples), tok, num_beams=1, max_new_tokens=6)
    alone = [model.generate(coll([s]), tok, num_beams=1, max_new_tokens=6)[0] for s in samples]
    assert together == alone
    beams = model.generate(coll(samples), tok, num_beams=3, max_new_tokens=6, stop_text=".")
    assert len(beams) == 3 and all(isinstance(b, str) for b in beams)


def test_state_dict_keys_name_their_segment(clipcap):
    model = clipcap[0]
    assert {k.split(".")[0] for k in model.state_dict()} == {"vision", "projector", "lm"}


def test_two_layer_model_overfits_eight_pairs(tiny_dir, tmp_path):
    from eim.api import train

    samples = caption_samples(tmp_path / "img", 8)
    r = tiny_recipe(tiny_dir, overrides={"stages.0.epochs": None, "stages.0.steps": 200, "train.batch_size": 8,
                                         "train.lr": 3e-3, "train.scheduler": "constant"})
    summary = train(r, ListDataset(samples), tmp_path / "run", quiet=True)
    assert summary[0]["final"]["loss_base"] < 0.05
