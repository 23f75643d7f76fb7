"""The three-segment model: splice, labels, padding, reference logits, generation (issue 2)."""

import json

import pytest
import torch
from conftest import ListDataset, caption_samples, tiny_recipe
from transformers import GPT2LMHeadModel

from eim.cli import main
from eim.config import load_recipe, recipe_names
from eim.errors import ConfigError
from eim.model.multimodal import build_model
from eim.model.splice import IGNORE, TextEncoder, splice
from eim.train.collate import Collator, load_image_processor


@pytest.fixture(scope="module")
def clipcap(tiny_dir):
    torch.manual_seed(0)
    model, tok = build_model(tiny_recipe(tiny_dir))
    model.eval()
    return model, tok, load_image_processor(tiny_dir / "clip")


def test_splice_places_image_tokens_and_masks_labels_token_by_token():
    D = 2
    text = torch.arange(2 * 5 * D, dtype=torch.float).view(2, 5, D)  # [B=2, Lt=5, D]
    lengths, lead = torch.tensor([4, 2]), torch.tensor([1, 0])
    labels = torch.tensor([[IGNORE, IGNORE, 7, 8, IGNORE], [5, 6, IGNORE, IGNORE, IGNORE]])
    prefix = -torch.ones(2, 3, D)  # 3 image tokens
    has = torch.tensor([True, False])  # second sample is text-only
    for side in ("right", "left"):
        emb, mask, pos, lab = splice(text, lengths, lead, prefix, has, labels, side=side)
        assert emb.shape == (2, 7, D)  # max(4 + 3, 2 + 0)
        row0 = [text[0, 0], *prefix[0], text[0, 1], text[0, 2], text[0, 3]]
        assert torch.equal(emb[0], torch.stack(row0))
        assert lab[0].tolist() == [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 7, 8]
        real = slice(0, 2) if side == "right" else slice(5, 7)
        assert torch.equal(emb[1, real], text[1, :2])
        # a row's first token has no predecessor, so it is never a target
        assert lab[1, real].tolist() == [IGNORE, 6] and (lab[1] != IGNORE).sum() == 1
        assert mask[1].sum() == 2 and mask[0].sum() == 7
        assert pos[1, real].tolist() == [0, 1]  # positions ignore padding on either side


def test_text_encoder_labels_cover_response_and_eos_only(clipcap):
    _, tok, _ = clipcap
    enc = TextEncoder(tok, max_length=64)
    ids, labels, lead = enc.encode("what is it?", "a red circle.")
    prompt = tok("what is it?", add_special_tokens=False).input_ids
    answer = tok(" a red circle.", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert ids == prompt + answer
    assert labels == [IGNORE] * len(prompt) + answer
    assert lead == 0


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
    from eim.commands.train import train

    samples = caption_samples(tmp_path / "img", 8)
    r = tiny_recipe(tiny_dir, overrides={"stages.0.epochs": None, "stages.0.steps": 200, "train.batch_size": 8,
                                         "train.lr": 3e-3, "train.scheduler": "constant"})
    summary = train(r, ListDataset(samples), tmp_path / "run", quiet=True)
    assert summary[0]["final"]["loss_base"] < 0.05


def test_every_shipped_recipe_loads():
    names = recipe_names()
    assert {"clipcap", "clipcap_eim", "clipcap_joint"} <= set(names)
    for n in names:
        r = load_recipe(n)
        assert r.stages and r.name == n


@pytest.mark.parametrize("override, needle", [
    ({"train.lrr": 1}, "train.lrr: unknown key (allowed: batch_size"),
    ({"train.lr": "fast"}, "train.lr: expected float, got 'fast'"),
    ({"vision.features": "half"}, "vision.features: 'half' is not allowed (allowed: pooled, full)"),
    ({"projector.type": "qformer"}, "projector.type: 'qformer' is not allowed (allowed: clipcap_mlp"),
    ({"vision.features": "full"}, "projector.type 'clipcap_mlp' maps one pooled vector"),
    ({"stages.0.trainable": ["vision"]}, "trains 'vision' but vision.trainable is 'frozen'"),
])
def test_bad_recipe_values_name_key_and_allowed_values(override, needle):
    with pytest.raises(ConfigError, match=None) as e:
        load_recipe("clipcap", override)
    assert needle in str(e.value)


def test_cli_rejects_unknown_override_and_recipe(capsys):
    assert main(["params", "clipcap", "--train.nope", "1"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err
    assert main(["params", "no_such_recipe"]) == 2
    assert "unknown recipe 'no_such_recipe' (shipped: clipcap" in capsys.readouterr().err


def test_params_report_exact_reference_numbers(capsys):
    assert main(["params", "clipcap", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["segments"]["projector"]["total"] == 31_468_800
    assert rep["segments"]["lm"]["total"] == 124_439_808
    assert rep["segments"]["vision"]["parts"] == {"tower": 87_456_000, "output_layer": 393_216, "tuning": 0}
    assert rep["segments"]["vision"]["total"] == 87_456_000 + 393_216
    assert rep["trainable"] == 31_468_800 + 124_439_808
    assert main(["params", "clipcap_eim", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["segments"]["projector"]["total"] == 4_722_432
    assert rep["segments"]["vision"]["parts"]["tower"] == 87_456_000
    assert rep["segments"]["vision"]["parts"]["output_layer"] == 0
    assert rep["segments"]["vision"]["parts"]["tuning"] == 8 * 768  # 8 shallow VPT prompts
    assert rep["total"] == sum(s["total"] for s in rep["segments"].values())
