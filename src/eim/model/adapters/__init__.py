"""Adapter fine-tuning methods: LLaMA-Adapter v1 adaption prompts and LaVIN's RepAdapters
(docs/design.md §4).

Both patch a Hugging Face model in place — through transformers' own extension points, never a
fork of its code — and keep its state-dict keys; their parameters live in one new submodule
(``lm.eim_adapter``, ``vision.adapters``) so a checkpoint of the tuned tensors is small.

- :mod:`eim.model.adapters.llama_adapter`: LLaMA-Adapter v1's zero-gated adaption prompts;
- :mod:`eim.model.adapters.lavin`: LaVIN's RepAdapters, mixture-of-modality router, modality token;
- :mod:`eim.model.adapters.anatomy`: what both share.
"""

from eim.model.adapters.anatomy import ADAPTER_ATTR, LMAdapter, decoder_attentions, first_real, lm_adapter
from eim.model.adapters.lavin import (InputAdapters, LaVINAdapters, RepAdapter, RouterAdapter, dense_weight,
                                      make_adapter)
from eim.model.adapters.llama_adapter import AdaptionPrompt


def attach_lm_adapter(lm, cfg):
    """Add the ``cfg.trainable`` adapter to a HF causal LM (in place); returns ``lm``."""
    if cfg.trainable == "adapter_prompt":
        adapter = AdaptionPrompt(lm, cfg.adapter_len, cfg.adapter_layer)
    elif cfg.trainable == "lavin":
        adapter = LaVINAdapters(lm, cfg)
    else:
        return lm
    lm.add_module(ADAPTER_ATTR, adapter)
    return lm


def attach_clip_adapters(vision_model, cfg):
    """LaVIN's adapters before the attention of every block of a HF ``CLIPVisionModel``."""
    layers = vision_model.encoder.layers
    d = vision_model.config.hidden_size
    return InputAdapters([make_adapter(cfg.lavin, d) for _ in layers], [layer.self_attn for layer in layers])


__all__ = ["ADAPTER_ATTR", "AdaptionPrompt", "InputAdapters", "LMAdapter", "LaVINAdapters", "RepAdapter",
           "RouterAdapter", "attach_clip_adapters", "attach_lm_adapter", "decoder_attentions", "dense_weight",
           "first_real", "lm_adapter", "make_adapter"]
