"""Gradient checkpointing (``train.gradient_checkpointing``) gives the gradients of the plain forward,
for every family and tuning mode, with EIM's extra forwards (loss_LM's text pass, loss_IE's CLIP
pass) in the same step: the tuning modes that keep per-call state (LLaMA-Adapter's visual prompt,
LaVIN's routing, gated VPT's own layer) recompute what their forward computed."""

import pytest
import torch
from helpers import ListDataset, caption_samples, tiny_recipe

from eim.banks import BankProvider
from eim.losses import build_losses
from eim.model.adapters import decoder_attentions
from eim.model.lm import checkpointing_layers
from eim.model.multimodal import build_model
from eim.model.splice import TextEncoder
from eim.model.vision import load_image_processor
from eim.training.collate import Collator
from eim.training.stage import StageStep

JOINT = [{"name": "joint", "losses": {"base": 1.0, "st": 1.0, "lm": 1.0, "ie": 1.0},
          "trainable": ["vision", "projector", "lm"], "steps": 1}]
FAMILIES = {  # recipe, LLM, overrides: every LLM family and tuning mode
    "clipcap: GPT-2 full, VPT": ("clipcap_joint", "gpt2", {}),
    "clipcap: gated deep VPT, LoRA GPT-2": ("clipcap_joint", "gpt2", {"vision.prompt_gate": True, "vision.prompt_deep": True,
                                                                      "lm.trainable": "lora"}),
    "llama_adapter: adaption prompts with the visual prompt, VPT": ("llama_adapter_eim", "llama", {
        "lm.adapter_layer": 2, "lm.adapter_len": 4, "projector.inject": "adapter_prompt"}),
    "lavin: router RepAdapters in CLIP and LLaMA": ("lavin_eim", "llama", {"vision.num_tokens": None}),
    # left padding: each LLM call routes from its own first real tokens, which differ from call to call
    "lavin: left-padded GPT-2": ("lavin_eim", "gpt2_left", {"vision.num_tokens": None}),
    "llava: LoRA CLIP, LLaMA full, vicuna_v1": ("llava_eim", "llama", {"data.template": "vicuna_v1"}),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = ListDataset(caption_samples(tmp_path_factory.mktemp("ckpt"), 6, captions_per_image=1))
    ds.files, ds.format, ds.split = [], "list", "train"
    return ds


def step_grads(recipe, data, banks, checkpointing, frozen_lm=False):
    """Loss values and parameter gradients of one training step of the recipe's first stage, and how
    often the first LLM and CLIP attention ran (twice per call when recomputed)."""
    torch.manual_seed(0)
    model, tok = build_model(recipe)
    stage = recipe.stages[0]
    losses = build_losses(stage, recipe, banks, model)
    model.requires_grad_(False)
    for seg in stage.trainable:
        for p in model.segment_tunable(seg):
            p.requires_grad_(True)
    step = StageStep(model, losses, need_cls="ie" in stage.losses).train()
    model.set_gradient_checkpointing(checkpointing)
    if frozen_lm:  # as the trainer runs a frozen LLM gradients flow through: eval mode, blocks recomputed
        model.lm.eval()
        checkpointing_layers(model.lm, checkpointing)
    calls = {"lm": 0, "clip": 0}
    decoder_attentions(model.lm)[0].register_forward_pre_hook(lambda *a: calls.__setitem__("lm", calls["lm"] + 1))
    model.vision.vision_model.encoder.layers[0].self_attn.register_forward_pre_hook(
        lambda *a: calls.__setitem__("clip", calls["clip"] + 1))
    proc = load_image_processor(recipe.vision.name_or_path)
    batch = Collator(TextEncoder.for_recipe(tok, recipe, stage), proc, bank_text=True)([data[i] for i in range(len(data))])
    torch.manual_seed(1)  # the same dropout masks in both runs
    terms = step(batch)
    sum(terms.values()).backward()
    terms = {k: v.detach() for k, v in terms.items()}
    grads = {n: p.grad.clone() for n, p in step.named_parameters() if p.grad is not None}
    return {k: v.item() for k, v in terms.items()}, grads, calls


@pytest.mark.parametrize("family", list(FAMILIES))
def test_checkpointed_gradients_equal_the_plain_ones(tiny_dir, data, tmp_path, family):
    name, lm, over = FAMILIES[family]
    recipe = tiny_recipe(tiny_dir, name, lm=lm, overrides={**over, "stages": JOINT, "eim.bank_dtype": "float32"})
    banks = BankProvider(recipe, data, tmp_path, quiet=True)
    plain_terms, plain, calls = step_grads(recipe, data, banks, False)
    terms, grads, ckpt_calls = step_grads(recipe, data, banks, True)
    assert set(terms) == {"loss_base", "loss_st", "loss_lm", "loss_ie"} and terms == pytest.approx(plain_terms, abs=1e-6)
    assert grads.keys() == plain.keys() and len(grads) > 3
    for k in plain:
        torch.testing.assert_close(grads[k], plain[k], rtol=1e-4, atol=1e-6, msg=k)
    # each LLM call (loss_base's, loss_LM's text pass) and each CLIP call recomputed once in backward
    assert ckpt_calls["lm"] == 2 * calls["lm"] == 4 and ckpt_calls["clip"] == 2 * calls["clip"]


def test_a_frozen_llm_in_eval_mode_is_recomputed_too(tiny_dir, data, tmp_path):
    """LLaVA's stage 1: the LLM frozen (eval mode: no dropout) but in the projector's gradient path."""
    recipe = tiny_recipe(tiny_dir, "llava", lm="llama", overrides={"stages": [
        {"name": "pretrain", "losses": {"base": 1.0}, "trainable": ["projector"], "steps": 1}]})
    _, plain, calls = step_grads(recipe, data, None, False, frozen_lm=True)
    _, grads, ckpt_calls = step_grads(recipe, data, None, True, frozen_lm=True)
    assert grads.keys() == plain.keys() and all(k.startswith("model.projector.") for k in grads)
    for k in plain:
        torch.testing.assert_close(grads[k], plain[k], rtol=1e-4, atol=1e-7, msg=k)
    assert ckpt_calls["lm"] == 2 * calls["lm"] == 2
