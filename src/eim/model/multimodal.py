"""``MultimodalLM(vision, projector, lm)``: the three-segment model (docs/design.md §1), composed.

Any Hugging Face causal LM is driven through ``inputs_embeds``; state-dict keys start with
``vision.``, ``projector.`` or ``lm.`` so a checkpoint says which segment each tensor belongs to.

A batch (built by :class:`eim.training.collate.Collator`) is a dict::

    pixel_values [B,3,H,W] (or absent)   features [B,...] (precomputed vision output, optional)
    has_image [B] bool   input_ids [B,Lt] (right-padded)   text_lengths [B]   n_lead [B]
    labels [B,Lt] (-100 outside the response)

Adapter LLMs (:mod:`eim.model.adapters`) take one more step: ``inject="adapter_prompt"``
(LLaMA-Adapter) hands the ST output to the adaption prompts instead of splicing it, and LaVIN puts
its modality token before each row; both happen in :meth:`MultimodalLM.embed`.
"""

from contextlib import nullcontext
from typing import Any, Optional, Union

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from eim.config import Recipe
from eim.model.adapters import lm_adapter
from eim.model.lm import build_lm, lm_tunable_parameters
from eim.model.projector import build_projector
from eim.model.splice import splice
from eim.model.vision import build_vision


class MultimodalLM(nn.Module):
    def __init__(self, vision: nn.Module, projector: nn.Module, lm: nn.Module, padding_side: str = "right",
                 inject: str = "splice") -> None:
        super().__init__()
        self.vision, self.projector, self.lm = vision, projector, lm
        self.padding_side = padding_side
        self.inject = inject  # splice: ST tokens in the input | adapter_prompt: added to LLaMA-Adapter's prompts

    # --- segments -------------------------------------------------------------------------
    def segment_tunable(self, segment: str) -> list[nn.Parameter]:
        """Parameters a stage may train in ``segment`` (its configured tuning method)."""
        if segment == "vision":
            return self.vision.tunable_parameters()
        if segment == "projector":
            return list(self.projector.parameters())
        return lm_tunable_parameters(self.lm, self.lm_cfg)

    def image_features(self, batch: dict[str, Any]) -> Optional[torch.Tensor]:
        """Vision output for the batch: precomputed ``features`` if present, else run CLIP."""
        if batch.get("features") is not None:
            return batch["features"]
        if batch.get("pixel_values") is None:
            return None
        return self.vision(batch["pixel_values"])

    def image_tokens(self, features: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if features is None:
            return None
        dtype = next(self.projector.parameters()).dtype  # a 16-bit CLIP feeds a float32 projector
        return self.projector(features.to(dtype))  # [B, P, D_lm]

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute the LLM's and CLIP's blocks in backward (``train.gradient_checkpointing``): the
        same gradients, less memory. An LLM adapter's per-call state is restored for the recompute
        (:meth:`eim.model.adapters.LMAdapter.checkpoint_context`)."""
        self.vision.checkpointing = on
        # transformers >= 5.25 names it activation checkpointing; earlier versions, gradient checkpointing
        new = hasattr(self.lm, "activation_checkpointing_enable")
        if not on:
            if self.lm.is_activation_checkpointing if new else self.lm.is_gradient_checkpointing:
                (self.lm.activation_checkpointing_disable if new else self.lm.gradient_checkpointing_disable)()
            return
        adapter = lm_adapter(self.lm)
        kw = {"use_reentrant": False}
        if adapter is not None:
            kw["context_fn"] = adapter.checkpoint_context
        if new:
            self.lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)

    def embed(self, batch: dict[str, Any], features: Optional[torch.Tensor] = None, with_labels: bool = True,
              side: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """-> (inputs_embeds, attention_mask, position_ids, labels) with image tokens spliced.

        With an LLM-side adapter, the adapter gets the last word (LaVIN: modality token first;
        LLaMA-Adapter: the ST output becomes the visual prompt of the LM call on these embeds).
        """
        if features is None:
            features = self.image_features(batch)
        prefix = self.image_tokens(features)
        text = self.lm.get_input_embeddings()(batch["input_ids"])  # [B, Lt, D]
        has = batch.get("has_image")
        spliced = prefix if self.inject == "splice" else None
        out = splice(text, batch["text_lengths"], batch["n_lead"], spliced, has,
                     batch.get("labels") if with_labels else None, side=side or self.padding_side)
        adapter = lm_adapter(self.lm)
        if adapter is not None:
            visual = prefix if self.inject == "adapter_prompt" else None
            out = adapter.prepare(*out, has_image=has, visual=visual)
        return out

    def forward(self, batch: dict[str, Any], features: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False) -> Any:
        """LM output; ``.loss`` is loss_base: cross-entropy on response tokens only (eq. 1)."""
        embeds, mask, pos, labels = self.embed(batch, features)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, labels=labels,
                       output_hidden_states=output_hidden_states, use_cache=False)

    # --- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase, num_beams: int = 1,
                 max_new_tokens: int = 30, stop_text: Optional[Union[str, list[str]]] = None,
                 end_text: Optional[str] = None, **generate_kwargs: Any) -> list[str]:
        """Decode with the LM's own ``generate`` from ``inputs_embeds`` (prompt = lead+image+instruction).

        ``batch`` holds prompt ids only (no response); prompts are left-padded here because
        batched decoding appends to the right. Returns one string per sample, cut after
        ``stop_text`` when given: a string, or a list of strings (decoding stops at the first
        that appears). ``end_text``: the conversation template's end of an answer where it is not
        EOS (:func:`eim.model.template.stop_text`): decoding stops there and it is cut off, not kept.
        ``generate_kwargs`` go to HF ``generate`` (e.g. ``use_cache``).
        """
        embeds, mask, _, _ = self.embed(batch, with_labels=False, side="left")
        kw = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                  num_beams=num_beams, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
        stops = _stops(stop_text) + _stops(end_text)
        if stops:
            kw.update(stop_strings=stops, tokenizer=tokenizer)
        adapter = lm_adapter(self.lm)
        with adapter.generating() if adapter is not None else nullcontext():
            out = self.lm.generate(**kw)
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        if end_text:
            texts = [t.lstrip().split(end_text)[0] for t in texts]
        return [cut_at_stop(t, stop_text) for t in texts]


def _stops(stop_text):
    """``stop_text`` (None, a string or a list of strings) as a list of non-empty strings."""
    return [s for s in ([stop_text] if isinstance(stop_text, str) else stop_text or ()) if s]


def cut_at_stop(text: str, stop_text: Optional[Union[str, list[str]]]) -> str:
    """Keep text up to and including the first ``stop_text`` (ClipCap keeps the final '.'); with a
    list, up to the end of whichever of them ends first."""
    text = text.strip()
    ends = [text.index(s) + len(s) for s in _stops(stop_text) if s in text]
    return text[: min(ends)] if ends else text


def build_model(recipe: Recipe, device: Optional[str] = None) -> tuple[MultimodalLM, Optional[PreTrainedTokenizerBase]]:
    """Build ``(model, tokenizer)`` from a :class:`eim.config.Recipe`.

    ``device="meta"``: architecture only (parameter reports for 7B-scale recipes, no memory).
    """
    vision = build_vision(recipe.vision, device=device)
    lm, tok = build_lm(recipe.lm, device=device)
    d_lm = lm.get_input_embeddings().embedding_dim
    n_tokens = None if recipe.vision.features in ("pooled", "cls") else vision.num_tokens
    if device == "meta":
        with torch.device("meta"):
            projector = build_projector(recipe.projector, vision.out_dim, d_lm, n_tokens)
    else:
        projector = build_projector(recipe.projector, vision.out_dim, d_lm, n_tokens)
    model = MultimodalLM(vision, projector, lm, padding_side=getattr(tok, "padding_side", "right") or "right",
                         inject=recipe.projector.inject)
    model.lm_cfg = recipe.lm
    return model, tok


def segment_counts(model: MultimodalLM) -> dict[str, dict[str, Any]]:
    """``{segment: {"total", "trainable", "parts"}}``; trainable = what the tuning methods train.

    ``parts`` splits the vision segment into the CLIP tower (HF ``CLIPVisionModel``), its output
    layer (``visual_projection``, present only in ``pooled`` mode) and the tuning parameters
    (VPT prompts / LoRA / LaVIN adapters), matching the paper's Table 2 accounting. With an
    LLM-side adapter the LLM gets ``parts`` too: ``base`` + the adapter's own (LLaMA-Adapter:
    ``prompts``, ``gates``; LaVIN: ``adapters``, ``modality_embedding``).
    """
    def count(params):
        return sum(p.numel() for p in {id(p): p for p in params}.values())

    out = {}
    for seg in ("vision", "projector", "lm"):
        module = getattr(model, seg)
        out[seg] = {"total": count(module.parameters()), "trainable": count(model.segment_tunable(seg))}
    v = model.vision
    tuning = [p for n, p in v.named_parameters()
              if n in ("prompts", "prompt_gates") or "lora_" in n or n.startswith("adapters.")]
    proj = count(v.visual_projection.parameters()) if v.visual_projection is not None else 0
    out["vision"]["parts"] = {"tower": out["vision"]["total"] - proj - count(tuning), "output_layer": proj,
                              "tuning": count(tuning)}
    adapter = lm_adapter(model.lm)
    if adapter is not None:
        out["lm"]["parts"] = {"base": out["lm"]["total"] - count(adapter.parameters()), **adapter.parts()}
    return out
