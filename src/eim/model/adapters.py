"""Adapter fine-tuning methods: LLaMA-Adapter v1 adaption prompts and LaVIN's RepAdapters (DESIGN §4).

Both patch a Hugging Face model in place — through transformers' own extension points, never a
fork of its code — and keep its state-dict keys; their parameters live in one new submodule
(``lm.eim_adapter``, ``vision.adapters``) so a checkpoint of the tuned tensors is small.

**LLaMA-Adapter v1** (``lm.trainable: adapter_prompt``, :class:`AdaptionPrompt`). The top
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

**LaVIN** (``lm.trainable: lavin`` / ``vision.trainable: lavin``). A RepAdapter — down-projection
d→8 with bias (``conv_A``), dropout 0.1, up-projection 8→d in 2 groups with bias (``conv_B``),
zero-initialised, scale s — applied to the *input of the attention* of every block, i.e. after the
pre-attention norm: ``attn_in = norm(x) + s·adapter(norm(x))`` (LaVIN:
``self.attention(self.adapter_attn(self.attention_norm(x)))``, the adapter returning its input
plus the branch). The mixture-of-modality router version (LaVIN's ScienceQA configuration, its
``RepAdapter_Router``) has two up-projections (``conv_B``, ``conv_D``) mixed by
``softmax(expert_weights(attn_in[first token]) / t)``; the LLM's first token is the learned
modality embedding (``nn.Embedding(2, d)``, 0 = text only, 1 = image) that
:meth:`LaVINAdapters.prepare` puts before each row. Parameter names follow LaVIN's so its weights
map one to one. The router reads the first *real* token of each row (the attention mask says
which), so left padding works; with a KV cache the routing weights computed at the prefill step
are reused while decoding (LaVIN's ``forward_llama_attn_cache`` does the same). In CLIP the router
reads the [CLS] token of each image (LaVIN's CLIP runs sequence-first and reads the first image
of the batch at every position, a quirk not reproduced).

Parameters (DESIGN §4): router adapter 20·d + 10 (81,930 at d = 4096), plain RepAdapter 13·d + 8.
"""

import sys
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from eim.errors import ConfigError

ADAPTER_ATTR = "eim_adapter"  # submodule of the HF LM that holds an LLM-side adapter's parameters


# ------------------------------------------------------------------------------------------------
# model anatomy


def decoder_attentions(model):
    """The self-attention module of every decoder layer of a HF causal LM (LLaMA family, GPT-2)."""
    for path in ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers"):
        node = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            attns = [getattr(layer, "self_attn", None) or getattr(layer, "attn", None) for layer in node]
            if all(a is not None for a in attns):
                return attns
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__} "
                      "(supported: LLaMA-family model.layers[i].self_attn, GPT-2 transformer.h[i].attn)")


def lm_adapter(lm):
    """The LLM-side adapter attached to ``lm`` (:class:`AdaptionPrompt`, :class:`LaVINAdapters`) or None."""
    return getattr(lm, ADAPTER_ATTR, None) if isinstance(lm, nn.Module) else None


def first_real(mask, batch_size=None, device=None):
    """Index of each row's first attended position [B] (0 when there is no 2-D mask)."""
    if mask is None or mask.dim() != 2:
        return None if batch_size is None else torch.zeros(batch_size, dtype=torch.long, device=device)
    return mask.long().argmax(-1)  # argmax returns the first maximum


def _match_batch(t, batch):
    """``t`` [b, ...] for a batch of ``batch`` rows: beam search repeats each sample's rows."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] and batch % t.shape[0] == 0:
        return t.repeat_interleave(batch // t.shape[0], dim=0)
    raise RuntimeError(f"adapter state has {t.shape[0]} rows for a batch of {batch}")


# ------------------------------------------------------------------------------------------------
# LaVIN: RepAdapter and the mixture-of-modality router adapter


class RepAdapter(nn.Module):
    """LaVIN's ``RepAdapter``: ``x + s · conv_B(dropout(conv_A(x)))`` on [B, L, d] -> [B, L, d].

    ``conv_A``: d -> hidden (bias, Xavier init); ``conv_B``: hidden -> d with ``groups`` groups
    (bias, zero init), both 1×1 convolutions over the token axis (LaVIN's parameter layout),
    computed as the equivalent dense matmuls (:func:`dense_weight`; faster than ``conv1d`` on CPU).
    13·d + 8 parameters at hidden 8.
    """

    def __init__(self, dim, hidden_dim=8, groups=2, scale=1.0, dropout=0.1):
        super().__init__()
        self.conv_A = nn.Conv1d(dim, hidden_dim, 1, bias=True)
        self.conv_B = nn.Conv1d(hidden_dim, dim, 1, groups=groups, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.scale = scale
        _lavin_init(self.conv_A, self.conv_B)

    def forward(self, x, index=None, weights=None):
        h = self.dropout(F.linear(x, dense_weight(self.conv_A), self.conv_A.bias))  # [B, L, hidden]
        return x + self.scale * F.linear(h, dense_weight(self.conv_B), self.conv_B.bias)


class RouterAdapter(nn.Module):
    """LaVIN's ``RepAdapter_Router`` (MMA): two up-projections mixed by a softmax router.

    ``w = softmax(expert_weights(x[b, index_b]) / t)`` [B, 2] from each row's first token, then
    ``x + s · (w0 · conv_B(h) + w1 · conv_D(h))`` with ``h = dropout(conv_A(x))``.
    20·d + 10 parameters at hidden 8 (81,930 at d = 4096).
    """

    def __init__(self, dim, hidden_dim=8, groups=2, scale=1.0, dropout=0.1, temperature=10.0):
        super().__init__()
        self.conv_A = nn.Conv1d(dim, hidden_dim, 1, bias=True)
        self.conv_B = nn.Conv1d(hidden_dim, dim, 1, groups=groups, bias=True)
        self.conv_D = nn.Conv1d(hidden_dim, dim, 1, groups=groups, bias=True)
        self.expert_weights = nn.Linear(dim, 2)  # the router
        self.dropout = nn.Dropout(dropout)
        self.scale, self.t = scale, temperature
        _lavin_init(self.conv_A, self.conv_B, self.conv_D)

    def router_weights(self, x, index=None):
        """[B, 2] routing weights from token ``index`` [B] of each row (default: position 0)."""
        first = x[:, 0] if index is None else x[torch.arange(x.shape[0], device=x.device), index.to(x.device)]
        return torch.softmax(self.expert_weights(first) / self.t, dim=-1)

    def forward(self, x, index=None, weights=None):
        w = (self.router_weights(x, index) if weights is None else weights).to(x.dtype)  # [B, 2]
        h = self.dropout(F.linear(x, dense_weight(self.conv_A), self.conv_A.bias))  # [B, L, hidden]
        # w0·(B h + b_B) + w1·(D h + b_D) = (w0 B + w1 D) h + (w0 b_B + w1 b_D): one matmul per sample
        W = w[:, 0, None, None] * dense_weight(self.conv_B) + w[:, 1, None, None] * dense_weight(self.conv_D)
        b = w[:, :1] * self.conv_B.bias + w[:, 1:] * self.conv_D.bias  # [B, d]
        return x + self.scale * torch.baddbmm(b[:, None], h, W.transpose(1, 2))  # [B, L, d]


def dense_weight(conv):
    """[C_out, C_in] matrix of a 1×1 ``nn.Conv1d`` (block-diagonal when grouped): conv over tokens
    of x^T equals ``F.linear(x, dense_weight(conv), conv.bias)``."""
    W = conv.weight[..., 0]
    return torch.block_diag(*W.unflatten(0, (conv.groups, -1))) if conv.groups > 1 else W


def _lavin_init(down, *ups):
    if down.weight.device.type == "meta":
        return
    nn.init.xavier_uniform_(down.weight)
    nn.init.zeros_(down.bias)
    for up in ups:  # zero up-projections: the adapted model starts as the original one
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)


def make_adapter(cfg, dim):
    """A RepAdapter or router adapter from the ``adapter_*`` fields of a vision/LM config."""
    kw = dict(hidden_dim=cfg.adapter_dim, groups=2, scale=cfg.adapter_scale, dropout=cfg.adapter_dropout)
    if cfg.adapter_type == "router":
        return RouterAdapter(dim, temperature=cfg.adapter_temperature, **kw)
    return RepAdapter(dim, **kw)


class InputAdapters(nn.ModuleList):
    """One adapter per attention module, applied to the module's input by a forward pre-hook.

    ``routing`` (optional): ``routing(i, adapter, x) -> [B, 2]`` router weights for layer ``i``;
    without it a router reads each row's position 0 (CLIP's [CLS]).
    """

    def __init__(self, adapters, attentions, routing=None):
        super().__init__(adapters)
        self.routing = routing
        for i, attn in enumerate(attentions):
            attn.register_forward_pre_hook(partial(self._pre_attention, i), with_kwargs=True)

    def _pre_attention(self, i, module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        ad = self[i]
        w = self.routing(i, ad, x) if (self.routing is not None and isinstance(ad, RouterAdapter)) else None
        y = ad(x, weights=w)
        if args:
            return (y, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": y}


class _LMAdapter(nn.Module):
    """Interface :class:`eim.model.multimodal.MultimodalLM` uses for an LLM-side adapter."""

    def prepare(self, embeds, mask, pos, labels, has_image=None, visual=None):
        """Last touch on the spliced LLM input ([B, T, D], mask, positions, labels); may add tokens."""
        return embeds, mask, pos, labels

    @contextmanager
    def generating(self):
        """Keep per-sample state for every forward of one ``generate`` call."""
        yield

    def parts(self):
        return {}


class LaVINAdapters(_LMAdapter):
    """LLM side of LaVIN: an adapter before the attention of every decoder layer + the modality token."""

    def __init__(self, lm, cfg):
        super().__init__()
        attns = decoder_attentions(lm)
        emb = lm.get_input_embeddings()
        d = emb.embedding_dim
        with torch.device(emb.weight.device):
            self.modality = nn.Embedding(2, d)  # LaVIN adapter_modality_embedding: 0 text only, 1 image
            adapters = [make_adapter(cfg, d) for _ in attns]
        self.adapters = InputAdapters(adapters, attns, routing=self.weights)  # a bound method, not a submodule
        self._index, self._weights, self._fresh = None, {}, True
        lm.register_forward_pre_hook(self._begin, with_kwargs=True)

    def _begin(self, module, args, kwargs):
        """Before each LM call: a new sequence (no cache or an empty one) routes from its first real
        token in every layer; a decoding step with a filled KV cache reuses those weights."""
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        self._fresh = past == 0
        if self._fresh:
            self._index, self._weights = first_real(kwargs.get("attention_mask")), {}

    def weights(self, i, adapter, x):
        """Router weights [B, 2] of layer ``i`` for its attention input ``x`` (the ``routing`` callable)."""
        if self._fresh or i not in self._weights:
            index = self._index
            if not self._fresh or index is None or index.shape[0] != x.shape[0]:
                index = None  # no mask for this call: position 0
            self._weights[i] = adapter.router_weights(x, index)
        return _match_batch(self._weights[i], x.shape[0])

    def prepare(self, embeds, mask, pos, labels, has_image=None, visual=None):
        """Put the modality token before each row's first real token: [B, T, D] -> [B, T+1, D]."""
        B, T, D = embeds.shape
        has = torch.zeros(B, dtype=torch.long) if has_image is None else has_image.long()
        token = self.modality(has.to(self.modality.weight.device)).to(embeds.dtype)  # [B, D]
        first = first_real(mask)  # old coordinates = the free slot before it in new ones
        rows = torch.arange(B, device=embeds.device)
        out = embeds.new_zeros(B, T + 1, D)
        out[:, 1:] = embeds
        out[rows, first] = token
        new_mask = mask.new_zeros(B, T + 1)
        new_mask[:, 1:] = mask
        new_mask[rows, first] = 1
        new_labels = None
        if labels is not None:
            new_labels = labels.new_full((B, T + 1), -100)
            new_labels[:, 1:] = labels
        return out, new_mask, (new_mask.cumsum(-1) - 1).clamp(min=0), new_labels

    def parts(self):
        return {"adapters": _count(self.adapters.parameters()), "modality_embedding": self.modality.weight.numel()}


# ------------------------------------------------------------------------------------------------
# LLaMA-Adapter v1: zero-gated adaption prompts


class AdaptionPrompt(_LMAdapter):
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

    # --- the adapter attention ------------------------------------------------------------------
    def attend(self, slot, module, query):
        """Gated attention of ``query`` [B, H, L, hd] (rotary applied) to this layer's prompts ->
        [B, L, H, hd], the layout HF attention functions return."""
        B, H, L, hd = query.shape
        prompt = self.prompts.weight.view(self.adapter_layer, self.adapter_len, -1)[slot].unsqueeze(0)  # [1, A, D]
        if self._visual is not None:
            prompt = prompt + _match_batch(self._visual, B).to(prompt.dtype)  # [B, A, D]
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
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

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


# ------------------------------------------------------------------------------------------------
# entry points used by eim.model.lm / eim.model.vision


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
    return InputAdapters([make_adapter(cfg, d) for _ in layers], [layer.self_attn for layer in layers])


def _count(params):
    return sum(p.numel() for p in params)
