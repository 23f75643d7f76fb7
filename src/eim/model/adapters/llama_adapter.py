"""**LLaMA-Adapter v1** (``lm.trainable: adapter_prompt``, :class:`AdaptionPrompt`). The top
``adapter_layer`` decoder layers each get ``adapter_len`` learnable prompt vectors (one
``nn.Embedding(adapter_layer * adapter_len, d)``, as in the official code). A layer's queries
attend to them through the layer's own frozen ``k_proj``/``v_proj`` with a softmax of their own
(no rotary position: the prompts have none), and the result is added to the attention output
before ``o_proj``, scaled per head by ``tanh(gate)``; ``gate`` [n_heads] starts at zero, so the
untrained model is the original one. (The official v1 multiplies by the raw zero-initialised
gate; ``tanh`` has the same value and gradient at 0 and keeps the gate in [-1, 1].) Grouped-query
attention is handled like the base attention (``repeat_kv``). Implemented as a registered
attention function (``AttentionInterface``) that wraps the model's own one, so it works for any
LLaMA-family model and with the KV cache: the prompts are not in the cache; their keys and
values are recomputed at every step (``adapter_len`` vectors per layer, negligible).
Multimodal variant (``projector.inject: adapter_prompt``): the ST output [B, adapter_len, d] is
added to every adapted layer's prompts instead of being spliced into the text.
"""

import sys
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from eim.errors import ConfigError
from eim.model.adapters.anatomy import LMAdapter, decoder_attentions, match_batch


class AdaptionPrompt(LMAdapter):
    """Adaption prompts in the top ``adapter_layer`` layers of a LLaMA-family LM (see module doc).

    ``prompts``: ``nn.Embedding(adapter_layer * adapter_len, d)`` (1,228,800 for LLaMA-7B, 30 × 10);
    ``gates``: [adapter_layer, n_heads] zeros (960 for LLaMA-7B).
    """

    def __init__(self, lm, adapter_len=10, adapter_layer=30):
        super().__init__()
        attns = decoder_attentions(lm)
        if not all(hasattr(a, "k_proj") and hasattr(a, "v_proj") and hasattr(a, "head_dim") for a in attns):
            raise ConfigError("lm.trainable 'adapter_prompt' needs a LLaMA-family LLM (attention with "
                              f"k_proj/v_proj), got {type(lm).__name__}")
        if adapter_layer > len(attns):
            raise ConfigError(f"lm.adapter_layer {adapter_layer} > the LLM's {len(attns)} layers: "
                              f"set --lm.adapter_layer {len(attns)} or less")
        emb = lm.get_input_embeddings()
        self.adapter_len, self.adapter_layer = adapter_len, adapter_layer
        n_heads = lm.config.num_attention_heads
        with torch.device(emb.weight.device):
            self.prompts = nn.Embedding(adapter_layer * adapter_len, emb.embedding_dim)
            self.gates = nn.Parameter(torch.zeros(adapter_layer, n_heads))  # tanh(0) = 0: the original model
        for slot, attn in enumerate(attns[-adapter_layer:]):
            attn._eim_adaption = (self, slot)  # a tuple: a plain attribute, not a second registration
        base = lm.config._attn_implementation or "sdpa"
        if not base.startswith(_IMPL_PREFIX):
            lm.set_attn_implementation(_register_adaption_attention(base))
        self._visual, self._pending, self._sticky = None, None, False
        lm.register_forward_pre_hook(self._begin, with_kwargs=True)
        lm.register_forward_hook(self._end)

    # --- per-call visual prompt (projector.inject: adapter_prompt) ------------------------------
    def prepare(self, embeds, mask, pos, labels, has_image=None, visual=None):
        """Remember ``visual`` [B, adapter_len, D] for the LM call that receives these ``embeds``."""
        if visual is not None and has_image is not None:
            visual = visual * has_image.to(visual.device, visual.dtype)[:, None, None]  # text-only rows: none
        self._pending = None if visual is None else (embeds, visual)
        return embeds, mask, pos, labels

    def _begin(self, module, args, kwargs):
        if self._sticky:
            return
        p, self._pending = self._pending, None
        self._visual = p[1] if p is not None and kwargs.get("inputs_embeds") is p[0] else None

    def _end(self, module, args, output):
        if not self._sticky:
            self._visual = None

    @contextmanager
    def generating(self):
        p, self._pending = self._pending, None
        self._visual, self._sticky = (p[1] if p is not None else None), True
        try:
            yield
        finally:
            self._visual, self._sticky = None, False

    def state(self):
        return (self._visual,)

    def set_state(self, state):
        self._visual = state[0]

    # --- the adapter attention ------------------------------------------------------------------
    def attend(self, slot, module, query):
        """Gated attention of ``query`` [B, H, L, hd] (rotary applied) to this layer's prompts ->
        [B, L, H, hd], the layout HF attention functions return."""
        B, H, L, hd = query.shape
        prompt = self.prompts.weight.view(self.adapter_layer, self.adapter_len, -1)[slot].unsqueeze(0)  # [1, A, D]
        if self._visual is not None:
            prompt = prompt + match_batch(self._visual, B).to(prompt.dtype)  # [B, A, D]
        prompt = prompt.to(query.dtype)
        b, A = prompt.shape[:2]
        k = module.k_proj(prompt).view(b, A, -1, hd).transpose(1, 2)  # [b, Hkv, A, hd], no rotary
        v = module.v_proj(prompt).view(b, A, -1, hd).transpose(1, 2)
        rep = H // k.shape[1]  # grouped-query attention: each kv head serves `rep` query heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # [b, H, A, hd]
        scores = torch.matmul(query, k.transpose(2, 3)) * module.scaling  # [B, H, L, A]
        probs = F.softmax(scores.float(), dim=-1).to(query.dtype)
        probs = probs * torch.tanh(self.gates[slot]).to(query.dtype).view(1, H, 1, 1)
        return torch.matmul(probs, v).transpose(1, 2)  # [B, L, H, hd]

    def parts(self):
        return {"prompts": self.prompts.weight.numel(), "gates": self.gates.numel()}


_IMPL_PREFIX = "eim_adaption_"


def _register_adaption_attention(base):
    """Register ``eim_adaption_<base>``: the model's ``base`` attention plus the adaption prompts."""
    name = _IMPL_PREFIX + base

    def attention(module, query, key, value, attention_mask, **kwargs):
        if base == "eager":  # eager is each model file's own function
            impl = sys.modules[type(module).__module__].eager_attention_forward
        else:
            impl = ALL_ATTENTION_FUNCTIONS[base]
        out, weights = impl(module, query, key, value, attention_mask, **kwargs)
        ref = getattr(module, "_eim_adaption", None)
        if ref is not None:
            out = out + ref[0].attend(ref[1], module, query)
        return out, weights

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])  # same masks as the base
    return name
