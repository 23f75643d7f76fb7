"""The LLM segment (eim.model.lm): GPT-2's ``gelu_new`` runs as PyTorch's one-kernel tanh GELU."""

import torch
from transformers import AutoModelForCausalLM
from transformers.activations import NewGELUActivation, PytorchGELUTanh

from eim.config import LMConfig
from eim.model.lm import build_lm, fused_activations


def test_gpt2_gelu_new_is_swapped_for_the_fused_kernel_with_equal_outputs(tiny_dir):
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2")  # transformers' own gelu_new
    assert any(type(m) is NewGELUActivation for m in plain.modules())
    model, _ = build_lm(LMConfig(name_or_path=str(tiny_dir / "gpt2")))
    assert not any(type(m) is NewGELUActivation for m in model.modules())
    assert sum(type(m) is PytorchGELUTanh for m in model.modules()) == plain.config.n_layer
    assert model.config.activation_function == "gelu_new"  # the config is left as it was
    ids = torch.randint(0, plain.config.vocab_size, (3, 11))
    a, b = plain(ids, labels=ids), model(ids, labels=ids)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-5)
    ga = torch.autograd.grad(a.loss, plain.transformer.h[0].mlp.c_fc.weight)[0]
    gb = torch.autograd.grad(b.loss, model.transformer.h[0].mlp.c_fc.weight)[0]
    torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-7)
    x = torch.linspace(-8, 8, 10001)
    torch.testing.assert_close(PytorchGELUTanh()(x), NewGELUActivation()(x), rtol=0, atol=5e-7)


def test_fused_activations_leaves_other_models_alone(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    before = [type(m) for m in model.modules()]
    assert [type(m) for m in fused_activations(model).modules()] == before
