"""**LaVIN** (``lm.trainable: lavin`` / ``vision.trainable: lavin``). A RepAdapter — down-projection
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

Parameters (docs/design.md §4): router adapter 20·d + 10 (81,930 at d = 4096), plain RepAdapter
13·d + 8.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from eim.model.adapters.anatomy import LMAdapter, count_params, decoder_attentions, first_real, match_batch


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
        # in the adapter's own dtype (float32 while it trains beside 16-bit weights), back in x's
        h = self.dropout(F.linear(x.to(self.conv_A.weight.dtype), dense_weight(self.conv_A), self.conv_A.bias))
        return x + (self.scale * F.linear(h, dense_weight(self.conv_B), self.conv_B.bias)).to(x.dtype)  # [B, L, d]


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
        return torch.softmax(self.expert_weights(first.to(self.expert_weights.weight.dtype)) / self.t, dim=-1)

    def forward(self, x, index=None, weights=None):
        dtype = self.conv_A.weight.dtype  # the adapter's own (float32 while it trains beside 16-bit weights)
        w = (self.router_weights(x, index) if weights is None else weights).to(dtype)  # [B, 2]
        h = self.dropout(F.linear(x.to(dtype), dense_weight(self.conv_A), self.conv_A.bias))  # [B, L, hidden]
        # w0·(B h + b_B) + w1·(D h + b_D) = (w0 B + w1 D) h + (w0 b_B + w1 b_D): one matmul per sample
        W = w[:, 0, None, None] * dense_weight(self.conv_B) + w[:, 1, None, None] * dense_weight(self.conv_D)
        b = w[:, :1] * self.conv_B.bias + w[:, 1:] * self.conv_D.bias  # [B, d]
        return x + (self.scale * torch.baddbmm(b[:, None], h, W.transpose(1, 2))).to(x.dtype)  # [B, L, d]


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
    """A RepAdapter or router adapter of width ``dim`` from a :class:`eim.config.RepAdapterConfig`
    (``vision.lavin`` / ``lm.lavin``)."""
    kw = dict(hidden_dim=cfg.dim, groups=2, scale=cfg.scale, dropout=cfg.dropout)
    if cfg.type == "router":
        return RouterAdapter(dim, temperature=cfg.temperature, **kw)
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


class LaVINAdapters(LMAdapter):
    """LLM side of LaVIN: an adapter before the attention of every decoder layer + the modality token."""

    def __init__(self, lm, cfg):
        super().__init__()
        attns = decoder_attentions(lm)
        emb = lm.get_input_embeddings()
        d = emb.embedding_dim
        with torch.device(emb.weight.device):
            self.modality = nn.Embedding(2, d)  # LaVIN adapter_modality_embedding: 0 text only, 1 image
            adapters = [make_adapter(cfg.lavin, d) for _ in attns]
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

    def state(self):
        return self._index, dict(self._weights), self._fresh

    def set_state(self, state):
        self._index, self._weights, self._fresh = state[0], dict(state[1]), state[2]

    def weights(self, i, adapter, x):
        """Router weights [B, 2] of layer ``i`` for its attention input ``x`` (the ``routing`` callable)."""
        if self._fresh or i not in self._weights:
            index = self._index
            if not self._fresh or index is None or index.shape[0] != x.shape[0]:
                index = None  # no mask for this call: position 0
            self._weights[i] = adapter.router_weights(x, index)
        return match_batch(self._weights[i], x.shape[0])

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
        return {"adapters": count_params(self.adapters.parameters()), "modality_embedding": self.modality.weight.numel()}
