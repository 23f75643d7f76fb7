"""The semantic-space transformation network ST ("projector"), docs/design.md §1 and §4.

Every ST maps visual features to LLM input embeddings: ``forward(x) -> [B, P, D_lm]`` where x is
[B, D_in] (pooled) or [B, T, D_in] (full). :func:`build_projector` fails loudly on unknown names.
"""

import torch
from torch import nn

from eim.errors import ConfigError


class ClipCapMLP(nn.Module):
    """ClipCap's MLP: D_in -> P*D_lm/2 (Tanh) -> P*D_lm, reshaped to P tokens.

    ViT-B/32 + GPT-2: 512 -> 3840 -> 7680 = 10 x 768, 31,468,800 parameters (docs/design.md §4).
    """

    def __init__(self, d_in, d_lm, prefix_length=10, hidden_dim=None):
        super().__init__()
        self.prefix_length, self.d_lm = prefix_length, d_lm
        hidden = hidden_dim or prefix_length * d_lm // 2
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, prefix_length * d_lm))

    def forward(self, x):  # x: [B, D_in]
        if x.dim() != 2:
            raise ValueError(f"clipcap_mlp expects pooled features [B, D], got shape {tuple(x.shape)}")
        return self.mlp(x).view(x.shape[0], self.prefix_length, self.d_lm)  # [B, P, D_lm]


class ClipCapTransformer(nn.Module):
    """ClipCap's transformer mapper: inputs mapped to ``clip_length`` tokens (pooled) or per token
    (full), a learnable constant prefix of ``prefix_length`` tokens appended, ``num_layers`` layers
    of self-attention; the outputs at the constant-prefix positions are the LLM prefix."""

    def __init__(self, d_in, d_lm, prefix_length=10, clip_length=10, num_layers=8, num_heads=8):
        super().__init__()
        self.clip_length, self.d_lm = clip_length, d_lm
        self.linear = nn.Linear(d_in, clip_length * d_lm)
        self.token_linear = nn.Linear(d_in, d_lm)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, d_lm))
        layer = nn.TransformerEncoderLayer(d_lm, num_heads, dim_feedforward=2 * d_lm, dropout=0.0,
                                           batch_first=True, norm_first=True)  # ClipCap: mlp_ratio 2
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x):
        if x.dim() == 2:  # pooled: [B, D_in] -> [B, clip_length, D_lm]
            x = self.linear(x).view(x.shape[0], self.clip_length, self.d_lm)
        else:  # full: [B, T, D_in] -> [B, T, D_lm]
            x = self.token_linear(x)
        prefix = self.prefix_const.unsqueeze(0).expand(x.shape[0], -1, -1)
        out = self.transformer(torch.cat([x, prefix], dim=1))
        return out[:, x.shape[1]:]  # [B, P, D_lm]


class TokenFFN(nn.Module):
    """EIM's token-wise FFN: D_in -> hidden -> D_lm on every visual token (GELU).

    ViT-B/32 full features + GPT-2: 768 -> 3072 -> 768 on 50 tokens, 4,722,432 parameters.
    """

    def __init__(self, d_in, d_lm, hidden_dim=None):
        super().__init__()
        hidden = hidden_dim or 4 * d_in
        self.ffn = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_lm))

    def forward(self, x):  # [B, T, D_in] (a pooled [B, D] becomes one token)
        return self.ffn(x if x.dim() == 3 else x.unsqueeze(1))  # [B, T, D_lm]


class LaVINMLP(nn.Module):
    """LaVIN's ``AdapterMLP``: D_in -> 128 (SiLU) -> D_lm, per token (1024->128->4096: 659,584)."""

    def __init__(self, d_in, d_lm, hidden_dim=None):
        super().__init__()
        hidden = hidden_dim or 128
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_lm))

    def forward(self, x):
        return self.mlp(x if x.dim() == 3 else x.unsqueeze(1))


class MLP2xGELU(nn.Module):
    """LLaVA-1.5's ``mlp2x_gelu``: D_in -> D_lm (GELU) -> D_lm on every visual token, with biases.

    ViT-L/14-336 + Vicuna-7B: 1024 -> 4096 -> 4096, 20,979,712 parameters (docs/design.md §4). The
    layers are named as transformers' ``LlavaMultiModalProjector`` names them (``linear_1``,
    ``linear_2``), and the GELU is its ``projector_hidden_act: gelu`` (the exact erf form), so an
    export is a rename of the segment (:mod:`eim.export`).
    """

    def __init__(self, d_in, d_lm, hidden_dim=None):
        super().__init__()
        hidden = hidden_dim or d_lm
        self.linear_1, self.act, self.linear_2 = nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_lm)

    def forward(self, x):  # [B, T, D_in] (a pooled [B, D] becomes one token) -> [B, T, D_lm]
        return self.linear_2(self.act(self.linear_1(x if x.dim() == 3 else x.unsqueeze(1))))


class PromptMLP(nn.Module):
    """LLaMA-Adapter v1's projection network (Zhang et al. 2023, §3.3; docs/design.md §4): the global
    image feature through a small MLP, D_in -> hidden (SiLU) -> D_lm, gives **one** image token
    [B, 1, D_lm] that the adaption prompts of every adapted layer add (repeated over their K vectors).

    Several input tokens [B, M, D_in] are reduced first: ``pool: concat`` joins them along the channel
    axis (the paper's multi-scale global features, e.g. the [CLS] of every k-th block: ``n_tokens``
    must be M), ``pool: mean`` runs the MLP on each token and averages the outputs (EIM's full CLIP
    tokens, whose ST keeps the input width of one token). ViT-L/14's 768-d image embedding into
    LLaMA-7B: 768 -> 128 -> 4096, 626,816 parameters (the paper's "0.6M projection network").
    """

    def __init__(self, d_in, d_lm, hidden_dim=None, pool="mean", n_tokens=None):
        super().__init__()
        if pool not in ("mean", "concat"):
            raise ConfigError(f"projector.pool: {pool!r} is not allowed (allowed: mean, concat)")
        if pool == "concat" and not n_tokens:
            raise ConfigError("projector.pool 'concat' needs a fixed number of visual tokens")
        self.pool = pool
        width = d_in * n_tokens if pool == "concat" else d_in
        hidden = hidden_dim or 128
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, d_lm))

    def forward(self, x):  # [B, D_in] or [B, M, D_in] -> [B, 1, D_lm]
        if x.dim() == 2:
            return self.mlp(x).unsqueeze(1)
        if self.pool == "concat":
            return self.mlp(x.flatten(1)).unsqueeze(1)
        return self.mlp(x).mean(1, keepdim=True)


def build_projector(cfg, d_in, d_lm, n_tokens=None):
    """ST from a :class:`eim.config.ProjectorConfig`; ``d_in`` = vision feature width, ``n_tokens`` =
    visual tokens per image (None for a pooled vector; ``prompt_mlp`` with ``pool: concat`` needs it)."""
    t = cfg.type
    if t == "clipcap_mlp":
        return ClipCapMLP(d_in, d_lm, cfg.prefix_length, cfg.hidden_dim)
    if t == "clipcap_transformer":
        return ClipCapTransformer(d_in, d_lm, cfg.prefix_length, cfg.clip_length, cfg.num_layers, cfg.num_heads)
    if t == "token_ffn":
        return TokenFFN(d_in, d_lm, cfg.hidden_dim)
    if t == "lavin_mlp":
        return LaVINMLP(d_in, d_lm, cfg.hidden_dim)
    if t == "mlp2x_gelu":
        return MLP2xGELU(d_in, d_lm, cfg.hidden_dim)
    if t == "prompt_mlp":
        return PromptMLP(d_in, d_lm, cfg.hidden_dim, cfg.pool, n_tokens)
    raise ConfigError(f"projector.type: unknown projector {t!r} "
                      "(allowed: clipcap_mlp, clipcap_transformer, token_ffn, lavin_mlp, mlp2x_gelu, prompt_mlp)")
