"""The image-encoder segment: a wrapper over Hugging Face CLIP's vision tower (docs/design.md §1, §3).

Feature modes:
- ``pooled`` — ClipCap's input: ``visual_projection(post_layernorm(h[:, 0]))``, 512-d for ViT-B/32.
- ``cls`` / ``full_projected`` — the paper's Table 9 halves: the [CLS] without the output layer,
  and every token through it.
- ``full``  — EIM's choice: ``post_layernorm`` applied to the [CLS] and every patch token, and no
  output layer (``visual_projection`` is not part of the segment, so it is not counted or saved).
  ``feature_layer: k`` takes instead the raw hidden state ``hidden_states[k]`` (transformers'
  numbering: 0 the embeddings, i block i's output; LLaVA-1.5 reads -2 and runs no further), and
  ``keep_cls: false`` drops the [CLS] token (LLaVA's ``vision_feature_select_strategy: default``).
  With ``cls_every: k`` (LaVIN) the features are instead the [CLS] token after every k-th block,
  counted back from the last (k = 4 on ViT-L/14's 24 blocks: blocks 4, 8, …, 24 -> 6 tokens), with
  neither ``post_layernorm`` nor the output layer.

Trainable modes: ``frozen``; ``prompt`` — visual prompt tuning (Jia et al. 2022): learnable
tokens inserted after [CLS] before the transformer (``shallow``), or replaced at every layer
(``deep``); they are dropped from the output so the feature count is unchanged; ``lora`` (peft,
on q/v projections); ``full``; ``lavin`` — LaVIN's RepAdapters (router or plain) before the
attention of every block (:mod:`eim.model.adapters`), zero-initialised.

CLIP's text tower is not held here: the text bank loads it from the same CLIP folder
(:mod:`eim.banks`).
"""

import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

try:  # transformers 5: the PIL backend by name (it needs no torchvision)
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4: the default processor is the PIL one
    from transformers import CLIPImageProcessor

from eim.errors import ConfigError
from eim.model.adapters import attach_clip_adapters
from eim.model.hub import resolve_config


PROJECTED = ("pooled", "full_projected")  # feature modes that keep CLIP's output layer


class VisionTower(nn.Module):
    """``forward(pixel_values [B,3,H,W]) -> features``: [B, D_proj] (pooled) or [B, T, D] (full)."""

    def __init__(self, vision_model, visual_projection, cfg):
        super().__init__()
        self.cfg = cfg
        self.checkpointing = False  # train.gradient_checkpointing: recompute each block in backward
        self.vision_model = vision_model  # transformers CLIPVisionModel
        # Only the pooled modes keep the output layer; EIM removes it (docs/design.md §1): it is then
        # kept aside, frozen and unregistered (not run, counted or saved with the segment), as the
        # joint-space head of loss_IE (ie_projection)
        projected = cfg.features in PROJECTED
        self.visual_projection = visual_projection if projected else None
        self._aside = () if projected or visual_projection is None else (visual_projection.requires_grad_(False),)
        width = vision_model.config.hidden_size
        if cfg.trainable == "prompt":
            n_layers = vision_model.config.num_hidden_layers if cfg.prompt_deep else 1
            # VPT initialises prompts uniformly in a range matched to the patch embedding scale.
            self.prompts = nn.Parameter(torch.empty(n_layers, cfg.prompt_length, width))
            if self.prompts.device.type != "meta":
                nn.init.uniform_(self.prompts, -0.02, 0.02)
            # gated VPT: the image tokens see the prompts through a zero-initialised gate per layer
            L = vision_model.config.num_hidden_layers
            self.prompt_gates = nn.Parameter(torch.zeros(L)) if cfg.prompt_gate else None
        else:
            self.prompts = self.prompt_gates = None
        if cfg.trainable == "lora":
            from peft import LoraConfig, inject_adapter_in_model  # peft: only LoRA runs need it

            lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=["q_proj", "v_proj"])
            self.vision_model = inject_adapter_in_model(lcfg, self.vision_model)
        if cfg.trainable == "lavin":
            self.adapters = attach_clip_adapters(self.vision_model, cfg)  # hooks on each block's attention

    @property
    def ie_projection(self):
        """CLIP's ``visual_projection``: loss_IE's ``clip_projection`` head (docs/design.md §2). The
        segment's own output layer in the projected modes, else the frozen one kept aside."""
        return self.visual_projection if self.visual_projection is not None else self._aside[0]

    @property
    def out_dim(self):
        if self.cfg.features in PROJECTED:
            return self.visual_projection.out_features
        return self.vision_model.config.hidden_size

    @property
    def num_tokens(self):
        """Visual tokens per image in ``full`` mode ([CLS] + patches, or ``cfg.num_tokens``)."""
        c = self.vision_model.config
        n = len(self.cls_blocks) if self.cfg.cls_every else (c.image_size // c.patch_size) ** 2 + self.cfg.keep_cls
        return min(n, self.cfg.num_tokens) if self.cfg.num_tokens else n

    @property
    def cls_blocks(self):
        """Blocks whose [CLS] output is a feature when ``cls_every`` is set (0-based, every k-th from the last)."""
        n = self.vision_model.config.num_hidden_layers
        return sorted(range(n - 1, -1, -self.cfg.cls_every)) if self.cfg.cls_every else []

    def tunable_parameters(self):
        """The parameters the configured tuning method trains (empty when frozen)."""
        mode = self.cfg.trainable
        if mode == "frozen":
            return []
        if mode == "prompt":
            return [self.prompts] + ([self.prompt_gates] if self.prompt_gates is not None else [])
        if mode == "lora":
            return [p for n, p in self.named_parameters() if "lora_" in n]
        if mode == "lavin":
            return list(self.adapters.parameters())
        return list(self.parameters())

    def encode(self, pixel_values, states=None, upto=None):
        """Run the ViT's first ``upto`` blocks (default all). Returns the last hidden state computed
        [B, 1+L, D] with prompt tokens removed; with ``states`` (a list, filled in place) also every
        hidden state as transformers numbers them: ``states[0]`` the embeddings after
        ``pre_layrnorm``, ``states[i]`` block i's output [B, 1+P+L, D] (prompt tokens included)."""
        vm = self.vision_model
        h = vm.embeddings(pixel_values.to(vm.embeddings.patch_embedding.weight.dtype))  # [B, 1+L, D]
        P = 0
        if self.prompts is not None:
            P = self.prompts.shape[1]
            prompts = self.prompts[0].unsqueeze(0).expand(h.shape[0], -1, -1)
            h = torch.cat([h[:, :1], prompts.to(h.dtype), h[:, 1:]], dim=1)  # [B, 1+P+L, D]
        h = vm.pre_layrnorm(h)
        if states is not None:
            states.append(h)
        for i, layer in enumerate(vm.encoder.layers[:upto]):
            if P and self.cfg.prompt_deep and i > 0:
                prompts = self.prompts[i].unsqueeze(0).expand(h.shape[0], -1, -1).to(h.dtype)
                h = torch.cat([h[:, :1], prompts, h[:, 1 + P :]], dim=1)
            h = self._layer(layer, h, P, i)
            if states is not None:
                states.append(h)
        return self.without_prompts(h)

    def _layer(self, layer, h, P, i):
        """Block ``i`` on ``h`` (gated VPT: its own split attention); with ``checkpointing``
        recomputed in backward instead of keeping its activations (docs/design.md §9)."""
        gate = self.prompt_gates[i] if P and self.prompt_gates is not None else None

        def run(h):
            if gate is not None:
                return _gated_prompt_layer(layer, h, P, gate)
            out = layer(h, None)
            return out[0] if isinstance(out, tuple) else out

        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(run, h, use_reentrant=False)
        return run(h)

    def without_prompts(self, h):
        """``h`` [B, 1+P+L, D] without its P prompt tokens -> [B, 1+L, D]."""
        P = 0 if self.prompts is None else self.prompts.shape[1]
        return torch.cat([h[:, :1], h[:, 1 + P :]], dim=1) if P else h

    @property
    def feature_blocks(self):
        """Blocks run to reach ``hidden_states[feature_layer]`` (LLaVA's -2: all but the last)."""
        k, n = self.cfg.feature_layer, self.vision_model.config.num_hidden_layers
        blocks = k if k >= 0 else n + 1 + k
        if not 0 <= blocks <= n:
            raise ConfigError(f"vision.feature_layer {k} is outside this CLIP's hidden states "
                              f"({-(n + 1)}..{n}: {n} blocks and the embeddings)")
        return blocks

    def forward(self, pixel_values, return_cls=False):
        c = self.cfg
        layer = c.feature_layer is not None
        states = [] if c.cls_every or (layer and return_cls) else None
        upto = self.feature_blocks if layer and not return_cls else None  # LLaVA: the last block never runs
        h = self.encode(pixel_values, states, upto)
        cls = self.vision_model.post_layernorm(h[:, 0]) if upto is None else None  # [B, D]
        if c.features == "pooled":
            feats = self.visual_projection(cls)  # [B, D_proj]
        elif c.features == "cls":  # the output layer removed, one vector (paper Table 9)
            feats = cls  # [B, D]
        elif c.cls_every:  # LaVIN: raw [CLS] of every k-th block [B, K, D]
            feats = torch.stack([states[i + 1][:, 0] for i in self.cls_blocks], dim=1)
            if c.num_tokens:
                feats = feats[:, : c.num_tokens]
        else:
            if layer:  # LLaVA: the raw hidden state of that layer, no post_layernorm [B, 1+L, D]
                feats = h if upto is not None else self.without_prompts(states[self.feature_blocks])
            else:  # EIM: post_layernorm over every token of the last block [B, 1+L, D]
                feats = self.vision_model.post_layernorm(h)
            if not c.keep_cls:  # patches only (LLaVA's "default" selection) [B, L, D]
                feats = feats[:, 1:]
            if c.num_tokens:
                feats = feats[:, : c.num_tokens]
            if c.features == "full_projected":  # every token through the output layer (Table 9)
                feats = self.visual_projection(feats)  # [B, T, D_proj]
        return (feats, cls) if return_cls else feats


def _gated_prompt_layer(layer, h, P, gate):
    """One CLIP encoder layer on ``h`` [B, 1+P+L, D] whose tokens 1..P are prompts, the image
    tokens ([CLS], patches) seeing the prompts only through ``tanh(gate)`` (docs/design.md §3).

    The image tokens' attention is split in two softmaxes, as LLaMA-Adapter's zero-init attention
    splits its prompts off: one over the image tokens (the pretrained layer's own attention, which
    the prompts do not perturb) and one over the prompts, added scaled by ``tanh(gate)``. The
    prompts attend to everything. At ``gate = 0`` the image tokens compute exactly what the
    pretrained tower computes, so a prompted CLIP starts as the original one.
    """
    attn, T = layer.self_attn, h.shape[1]
    prompt = torch.zeros(T, dtype=torch.bool, device=h.device)
    prompt[1 : 1 + P] = True
    neg = torch.finfo(h.dtype).min
    image_rows = ~prompt[:, None]  # [T, 1]
    own = torch.zeros(T, T, dtype=h.dtype, device=h.device)
    own.masked_fill_(image_rows & prompt[None, :], neg)  # image tokens: image keys only
    via = torch.zeros(T, T, dtype=h.dtype, device=h.device)
    via.masked_fill_(~prompt[None, :], neg)  # every row: prompt keys only (only image rows are kept)
    x = layer.layer_norm1(h)
    a_own, _ = attn(x, attention_mask=own[None, None])  # [B, T, D]
    a_via, _ = attn(x, attention_mask=via[None, None])
    bias = attn.out_proj.bias if attn.out_proj.bias is not None else 0.0
    g = torch.tanh(gate).to(h.dtype) * image_rows[None].to(h.dtype)  # [1, T, 1]: prompts keep a_own
    h = h + a_own + g * (a_via - bias)
    return h + layer.mlp(layer.layer_norm2(h))


def features_of(out):
    """The tensor of ``CLIPModel.get_text_features`` / ``get_image_features``: transformers 5 returns
    a model output whose ``pooler_output`` is the projected embedding, transformers 4 the tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


def clip_config(name_or_path):
    """The ``CLIPConfig`` of a folder or hub id, or of the paper's known architectures offline
    (``eim.model.known_configs``), so that ``eim params`` works without weights."""
    return resolve_config(name_or_path, CLIPConfig)


def build_vision(cfg, device=None):
    """Build the vision segment from ``cfg`` (a :class:`eim.config.VisionConfig`).

    ``device="meta"`` builds it without weights (for parameter reports).
    """
    if device == "meta":
        clip_cfg = clip_config(cfg.name_or_path)
        with torch.device("meta"):
            dtype = getattr(torch, cfg.dtype)
            vm = CLIPVisionModel(clip_cfg.vision_config).to(dtype)
            proj = nn.Linear(clip_cfg.vision_config.hidden_size, clip_cfg.projection_dim, bias=False).to(dtype)
            return VisionTower(vm, proj, cfg)
    clip = CLIPModel.from_pretrained(cfg.name_or_path, dtype=getattr(torch, cfg.dtype))
    return VisionTower(clip.vision_model, clip.visual_projection, cfg)


def load_image_processor(clip_path, image_size=None):
    """The CLIP image processor saved beside the weights, or CLIP's standard one at ``image_size``
    (its PIL backend, which needs no torchvision)."""
    logging.getLogger("transformers.models.clip").setLevel(logging.ERROR)
    if (Path(clip_path) / "preprocessor_config.json").exists():
        return CLIPImageProcessor.from_pretrained(clip_path)
    size = image_size or 224
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
