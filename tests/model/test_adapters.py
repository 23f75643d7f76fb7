"""LLaMA-Adapter v1 adaption prompts and LaVIN RepAdapters (issue 7, docs/design.md §4), on tiny models."""

import json
import types

import pytest
import torch
from helpers import ListDataset, caption_samples, tiny_recipe
from transformers import CLIPModel, LlamaConfig, LlamaForCausalLM

from eim.cli import main
from eim.recipe import load_recipe
from eim.errors import ConfigError
from eim.io import load_tensors
from eim.model.adapters import RepAdapter, RouterAdapter, attach_lm_adapter, lm_adapter
from eim.model.multimodal import build_model
from eim.model.splice import TextEncoder, splice
from eim.model.vision import load_image_processor
from eim.training.collate import Collator

SMALL = {"llama_adapter": {"lm.adapter_layer": 2, "projector.num_heads": 2},
         "llama_adapter_eim": {"lm.adapter_layer": 2, "projector.num_heads": 2},
         "lavin": {}, "lavin_eim": {}}


def tiny(tiny_dir, name, **overrides):
    torch.manual_seed(0)
    model, tok = build_model(tiny_recipe(tiny_dir, name, lm="llama", overrides={**SMALL[name], **overrides}))
    return model.eval(), tok


def batch_of(tiny_dir, tok, samples, mode="train"):
    return Collator(TextEncoder(tok, 32), load_image_processor(tiny_dir / "clip"), mode=mode)(samples)


def mixed_samples(path, n=3):
    """Captions with different prompt lengths and one text-only row (the tiny tokenizer adds no BOS,
    and LLaMA-Adapter does not splice the image, so every prompt needs some text)."""
    samples = caption_samples(path, n)
    for s in samples:
        s.instruction = "describe"
    samples[1].image, samples[1].instruction = None, "a red"  # text only (it needs some prompt)
    samples[-1].instruction = "what is shown in this picture"
    return samples


def randomise(module, seed=1):
    """Give every adapter/prompt tensor non-zero values (zero-initialised ones hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def reference_llama(model):
    return LlamaForCausalLM.from_pretrained(model.lm.name_or_path).eval()


# --- zero-initialised adapters leave the model unchanged ------------------------------------------

def test_llama_adapter_starts_as_the_base_model_and_uses_prompts_and_image(tiny_dir, tmp_path):
    model, tok = tiny(tiny_dir, "llama_adapter")
    batch = batch_of(tiny_dir, tok, mixed_samples(tmp_path))
    ref = reference_llama(model)
    with torch.no_grad():
        got = model(batch).logits
        # the image is not spliced (inject: adapter_prompt): the base model reads the text only
        emb, mask, pos, _ = splice(ref.get_input_embeddings()(batch["input_ids"]), batch["text_lengths"],
                                   batch["n_lead"], None, None, None, side=model.padding_side)
        want = ref(inputs_embeds=emb, attention_mask=mask, position_ids=pos).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        adapter = lm_adapter(model.lm)
        adapter.gates.fill_(0.5)  # open the gates: now the prompts and the image must count
        opened = model(batch).logits
        assert (opened - want).abs().amax() > 1e-3
        no_image = dict(batch, has_image=torch.zeros_like(batch["has_image"]))
        blind = model(no_image).logits
    has = batch["has_image"]
    assert (blind[has] - opened[has]).abs().amax() > 1e-4  # ST output added to the prompts
    torch.testing.assert_close(blind[~has], opened[~has])  # text-only rows get no visual prompt


def test_lavin_starts_as_the_base_model(tiny_dir, tmp_path):
    model, tok = tiny(tiny_dir, "lavin")
    batch = batch_of(tiny_dir, tok, mixed_samples(tmp_path))
    ref = reference_llama(model)
    clip = CLIPModel.from_pretrained(tiny_dir / "clip").eval()
    modality = lm_adapter(model.lm).modality.weight
    with torch.no_grad():
        got = model(batch).logits
        hs = clip.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True).hidden_states
        feats = torch.stack([h[:, 0] for h in hs[1:]], dim=1)  # [CLS] of every block (cls_every 1), raw
        image = model.projector(feats)  # [B, n_blocks, D]
        for b in range(len(batch["input_ids"])):
            n, k = int(batch["text_lengths"][b]), int(batch["n_lead"][b])
            text = ref.get_input_embeddings()(batch["input_ids"][b, :n])
            has = bool(batch["has_image"][b])
            parts = [modality[int(has)][None], text[:k]] + ([image[b]] if has else []) + [text[k:]]
            want = ref(inputs_embeds=torch.cat(parts)[None]).logits[0]
            torch.testing.assert_close(got[b, : want.shape[0]], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["llama_adapter", "lavin"])
def test_padding_side_does_not_change_the_loss_with_adapters(tiny_dir, tmp_path, name):
    model, tok = tiny(tiny_dir, name)
    randomise(lm_adapter(model.lm))
    if name == "lavin":
        randomise(model.vision.adapters, seed=2)
    batch = batch_of(tiny_dir, tok, mixed_samples(tmp_path, 4))
    losses = []
    for side in ("right", "left"):  # LaVIN's router must read the modality token wherever it is
        model.padding_side = side
        with torch.no_grad():
            losses.append(model(batch).loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


# --- the adapters by hand --------------------------------------------------------------------------

def test_repadapter_and_router_adapter_equal_hand_computation():
    torch.manual_seed(0)
    d, h = 6, 4
    x = torch.randn(2, 5, d)
    rep = RepAdapter(d, hidden_dim=h, groups=2, scale=0.7).eval()
    assert not rep.conv_B.weight.any() and not rep.conv_B.bias.any()  # zero-initialised up-projection
    torch.testing.assert_close(rep(x), x)
    randomise(rep)

    def down(m):  # d -> h, bias
        return x @ m.conv_A.weight[:, :, 0].T + m.conv_A.bias  # [2, 5, h]

    def grouped_up(conv, z):  # h -> d in 2 groups: channels [0, d/2) read z[:h/2], [d/2, d) read z[h/2:]
        W, b = conv.weight[:, :, 0], conv.bias  # W: [d, h/2]
        return torch.cat([z[..., : h // 2] @ W[: d // 2].T, z[..., h // 2 :] @ W[d // 2 :].T], -1) + b

    with torch.no_grad():
        torch.testing.assert_close(rep(x), x + 0.7 * grouped_up(rep.conv_B, down(rep)))
        lavin = x + 0.7 * rep.conv_B(rep.conv_A(x.transpose(1, 2))).transpose(1, 2)  # LaVIN's conv form
        torch.testing.assert_close(rep(x), lavin)
        router = RouterAdapter(d, hidden_dim=h, groups=2, scale=0.7, temperature=3.0).eval()
        randomise(router)
        w = torch.softmax((x[:, 0] @ router.expert_weights.weight.T + router.expert_weights.bias) / 3.0, -1)
        z = down(router)
        mix = w[:, :1, None] * grouped_up(router.conv_B, z) + w[:, 1:, None] * grouped_up(router.conv_D, z)
        want = x + 0.7 * mix
        torch.testing.assert_close(router(x), want)
        # routing from another token per row (LaVIN's modality token after left padding)
        idx = torch.tensor([2, 0])
        w2 = torch.softmax(router.expert_weights(x[torch.arange(2), idx]) / 3.0, -1)
        torch.testing.assert_close(router.router_weights(x, idx), w2)
    # docs/design.md §4: 20 d + 10 per router adapter, 13 d + 8 per plain RepAdapter
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with torch.device("meta"):
        assert [count(RouterAdapter(n)) for n in (4096, 5120, 1024)] == [81_930, 102_410, 20_490]
        assert count(RepAdapter(4096)) == 13 * 4096 + 8


def test_adaption_prompt_attention_equals_hand_computation_with_gqa():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    lm = LlamaForCausalLM(cfg).eval()
    attach_lm_adapter(lm, types.SimpleNamespace(trainable="adapter_prompt", adapter_len=3, adapter_layer=2))
    ad = lm_adapter(lm)
    assert ad.prompts.weight.shape == (2 * 3, 32) and ad.gates.shape == (2, 4) and not ad.gates.any()
    assert not hasattr(lm.model.layers[0].self_attn, "_eim_adaption")  # only the top 2 layers
    randomise(ad)
    attn = lm.model.layers[2].self_attn  # slot 1
    x = torch.randn(2, 5, 32)
    pos = torch.arange(5)[None].expand(2, -1)
    cos, sin = lm.model.rotary_emb(x, pos)
    with torch.no_grad():
        got = attn(hidden_states=x, position_embeddings=(cos, sin), attention_mask=None)[0]
        hd, H = 8, 4

        def heads(t):  # [B, L, n*hd] -> [B, n, L, hd]
            return t.view(t.shape[0], t.shape[1], -1, hd).transpose(1, 2)

        def rot(t):
            c, s = cos[:, None], sin[:, None]
            return t * c + torch.cat([-t[..., hd // 2 :], t[..., : hd // 2]], -1) * s

        q, k, v = rot(heads(attn.q_proj(x))), rot(heads(attn.k_proj(x))), heads(attn.v_proj(x))
        k, v = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)  # 2 kv heads serve 4 query heads
        causal = torch.full((5, 5), float("-inf")).triu(1)
        base = torch.softmax(q @ k.transpose(2, 3) / hd ** 0.5 + causal, -1) @ v
        prompt = ad.prompts.weight.view(2, 3, 32)[1]  # [A, D]; no rotary on the prompts
        kp = attn.k_proj(prompt).view(3, 2, hd).transpose(0, 1).repeat_interleave(2, 0)  # [H, A, hd]
        vp = attn.v_proj(prompt).view(3, 2, hd).transpose(0, 1).repeat_interleave(2, 0)
        gate = torch.tanh(ad.gates[1]).view(1, H, 1, 1)
        extra = gate * torch.softmax(q @ kp.transpose(1, 2) / hd ** 0.5, -1) @ vp  # own softmax, gated
        want = attn.o_proj((base + extra).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# --- generation with the KV cache ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama_adapter", "lavin"])
def test_generation_with_kv_cache_equals_without(tiny_dir, tmp_path, name):
    model, tok = tiny(tiny_dir, name)
    randomise(lm_adapter(model.lm))
    if name == "lavin":
        randomise(model.vision.adapters, seed=2)
    prompts = batch_of(tiny_dir, tok, mixed_samples(tmp_path, 4), mode="prompt")
    for beams in (1, 2):
        cached = model.generate(prompts, tok, num_beams=beams, max_new_tokens=8, use_cache=True)
        fresh = model.generate(prompts, tok, num_beams=beams, max_new_tokens=8, use_cache=False)
        assert cached == fresh
    # batched greedy decoding (left padding, mixed image/text rows) equals one sample at a time
    one = [model.generate(batch_of(tiny_dir, tok, [s], mode="prompt"), tok, max_new_tokens=8)[0]
           for s in mixed_samples(tmp_path, 4)]
    assert one == model.generate(prompts, tok, max_new_tokens=8)


# --- stages train only what they name ---------------------------------------------------------------

EXPECTED = {
    "llama_adapter_eim": {"projector": "projector.", "lm": "lm.eim_adapter.", "vision": "vision.prompts"},
    "lavin_eim": {"projector": "projector.", "lm": "lm.eim_adapter.", "vision": "vision.adapters."},
}


@pytest.mark.parametrize("name", ["llama_adapter_eim", "lavin_eim"])
def test_each_stage_trains_only_its_adapter_parameters(tiny_dir, tmp_path, name):
    from eim.api import train

    samples = caption_samples(tmp_path / "img", 6)
    samples[2].image = None  # text-only rows go through the same path
    overrides = {**SMALL[name], "train.weight_decay": 0.0, "train.lr": 1e-2, "train.scheduler": "constant"}
    for k in range(4):
        overrides.update({f"stages.{k}.epochs": None, f"stages.{k}.steps": 2})
    recipe = tiny_recipe(tiny_dir, name, lm="llama", overrides=overrides)
    seen = {}

    def record(trainer, k, step):
        seen[k] = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
        seen["model"] = trainer.model

    train(recipe, ListDataset(samples), tmp_path / "run", quiet=True, callbacks=[record])
    model = seen["model"]
    prefix = EXPECTED[name]
    tunable = {n for n, _ in model.named_parameters() if any(n.startswith(p) for p in prefix.values())}
    torch.manual_seed(recipe.train.seed)  # as train() does: the same initial ST/prompts/adapters
    before = {n: p.detach().clone() for n, p in build_model(recipe)[0].named_parameters() if n in tunable}
    for k, stage in enumerate(recipe.stages):
        want = {n for n in tunable if any(n.startswith(prefix[seg]) for seg in stage.trainable)}
        assert seen[k] == want, stage.name  # requires_grad: exactly the stage's adapter/prompt/ST tensors
        d = tmp_path / "run" / f"stage-{k}-{stage.name}"
        own = load_tensors(d / "model.safetensors")[0]
        assert set(own) == want  # a stage's file holds what it trained, never base weights
        after = {**before, **own}  # the model after the stage, as readers compose the stage files
        changed = {n for n in after if not torch.equal(after[n], before[n])}
        assert changed and changed <= want, (stage.name, changed - want)
        before = after
    # the gates/up-projections started at zero and were trained
    key = "lm.eim_adapter.gates" if name == "llama_adapter_eim" else "lm.eim_adapter.adapters.1.conv_B.weight"
    assert before[key].abs().sum() > 0
    ref, clip = reference_llama(model), CLIPModel.from_pretrained(tiny_dir / "clip")
    for n, p in ref.named_parameters():  # the base LLM and CLIP are untouched
        torch.testing.assert_close(model.lm.get_parameter(n), p, rtol=0, atol=0)
    for n, p in clip.vision_model.named_parameters():
        torch.testing.assert_close(model.vision.vision_model.get_parameter(n), p, rtol=0, atol=0)


# --- parameter counts at published size (meta device) ---------------------------------------------

def params(capsys, name):
    assert main(["params", name, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_params_llama_adapter_7b_is_1_2m_plus_the_0_6m_projection(capsys):
    rep = params(capsys, "llama_adapter_7b")
    lm, st = rep["segments"]["lm"], rep["segments"]["projector"]
    assert lm["trainable"] == 1_228_800 + 960
    assert lm["parts"] == {"base": 6_738_415_616, "prompts": 1_228_800, "gates": 960}
    assert st["trainable"] == st["total"] == 768 * 128 + 128 + 128 * 4096 + 4096 == 626_816
    assert rep["segments"]["vision"]["trainable"] == 0
    assert rep["trainable"] == 1_856_576 < 2_000_000  # the published model tunes under 2M in all
    assert main(["params", "llama_adapter_7b", "--json", "--projector.type", "clipcap_transformer"]) == 0
    big = json.loads(capsys.readouterr().out)  # the larger ST stays an option
    assert big["segments"]["projector"]["trainable"] == 303_214_592


def test_prompt_mlp_is_one_image_token_added_to_every_prompt(tiny_dir, tmp_path):
    from eim.model.projector import PromptMLP

    mlp = PromptMLP(8, 16, hidden_dim=4)
    x = torch.randn(3, 5, 8)
    assert mlp(x[:, 0]).shape == (3, 1, 16)
    torch.testing.assert_close(mlp(x), mlp.mlp(x).mean(1, keepdim=True))  # pool mean: per token, then averaged
    cat = PromptMLP(8, 16, hidden_dim=4, pool="concat", n_tokens=5)  # multi-scale features joined
    assert cat.mlp[0].in_features == 40 and cat(x).shape == (3, 1, 16)
    with pytest.raises(ConfigError, match="needs a fixed number of visual tokens"):
        PromptMLP(8, 16, pool="concat")
    # in the model: the one token reaches every prompt vector of every adapted layer
    model, tok = tiny(tiny_dir, "llama_adapter")
    batch = batch_of(tiny_dir, tok, mixed_samples(tmp_path))
    adapter = lm_adapter(model.lm)
    seen = []
    orig = adapter.attend
    adapter.attend = lambda slot, module, q: seen.append(adapter._visual) or orig(slot, module, q)
    with torch.no_grad():
        model(batch)
    assert len(seen) == 2 and all(v.shape == (len(batch["has_image"]), 1, model.lm.config.hidden_size) for v in seen)


@pytest.mark.parametrize("name, total, llm, mlp, emb", [
    ("lavin_7b", 3_781_296, 32 * 81_930, 659_584, 8_192),
    ("lavin_13b", 5_390_080, 40 * 102_410, 791_680, 10_240),
])
def test_params_lavin_match_published_arithmetic(capsys, name, total, llm, mlp, emb):
    rep = params(capsys, name)
    seg = rep["segments"]
    assert rep["trainable"] == total
    assert seg["lm"]["parts"]["adapters"] == llm and seg["lm"]["parts"]["modality_embedding"] == emb
    assert seg["vision"]["trainable"] == seg["vision"]["parts"]["tuning"] == 24 * 20_490
    assert seg["projector"]["trainable"] == mlp


def test_lavin_features_are_the_cls_of_every_kth_block(tiny_dir):
    assert tiny(tiny_dir, "lavin")[0].vision.num_tokens == 2  # tiny CLIP: 2 blocks, cls_every 1
    model, _ = build_model(load_recipe("lavin_7b"), device="meta")
    assert model.vision.cls_blocks == [3, 7, 11, 15, 19, 23] and model.vision.num_tokens == 6


@pytest.mark.parametrize("override, needle", [
    ({"lm.trainable": "lavin"}, "projector.inject 'adapter_prompt' adds the ST output"),
    ({"projector.type": "clipcap_transformer", "projector.prefix_length": 4},
     "projector.prefix_length (4) must equal lm.adapter_len (10)"),
    ({"projector.pool": "max"}, "projector.pool: 'max' is not allowed (allowed: mean, concat)"),
    ({"projector.type": "lavin_mlp"}, "needs an ST with a fixed number of output tokens"),
    ({"lm.lavin.dim": 7}, "lm.lavin.dim must be an even number"),
    ({"vision.cls_every": 4}, "vision.cls_every (LaVIN's per-block [CLS] tokens) needs vision.features 'full'"),
    ({"lm.lavin.type": "mixture"}, "lm.lavin.type: 'mixture' is not allowed (allowed: router, repadapter)"),
])
def test_bad_adapter_settings_are_refused(override, needle):
    with pytest.raises(ConfigError) as e:
        load_recipe("llama_adapter", override)
    assert needle in str(e.value)


def test_adapter_layer_beyond_the_llm_is_refused(tiny_dir):
    with pytest.raises(ConfigError, match="lm.adapter_layer 30 > the LLM's 2 layers"):
        build_model(tiny_recipe(tiny_dir, "llama_adapter", lm="llama", overrides={"projector.num_heads": 2}))
    with pytest.raises(ConfigError, match="LLaMA-family"):
        build_model(tiny_recipe(tiny_dir, "llama_adapter", lm="gpt2", overrides=SMALL["llama_adapter"]))
