"""Batching samples for the model: images through CLIP's image processor (padded to a square first
when the recipe says ``data.image_aspect_ratio: pad``), text through the LLM's tokenizer and the
stage's conversation template (:class:`eim.model.splice.TextEncoder`). Produces the batch dict
documented in :mod:`eim.model.multimodal`.
"""

from typing import Any, Optional

import torch
from PIL import Image

from eim.data import load_image
from eim.data.images import image_pixel_values
from eim.data.sample import Sample
from eim.model.splice import IGNORE, TextEncoder, pad_ids

ASPECT_RATIOS = ("crop", "pad")


def pixel_values(image_processor: Any, paths: list[str], aspect_ratio: str = "crop") -> torch.Tensor:
    """``[n, 3, H, W]`` of the images at ``paths``, loaded, then :func:`eim.data.images.image_pixel_values`
    (``crop``, or ``pad`` to a square in the processor's mean colour as LLaVA-1.5 does)."""
    return image_pixel_values(image_processor, [load_image(p) for p in paths], aspect_ratio)


def to_device(batch: dict[str, Any], device: Any, non_blocking: bool = False) -> dict[str, Any]:
    """The batch with its tensors on ``device`` (other values as they are)."""
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


class Collator:
    """``samples -> batch``. ``mode``: ``train`` (ids + labels), ``prompt`` (generation prompt only),
    ``text`` (no image at all, and the bare layout EIM's banks read, whatever the template).
    ``features``: optional ``{image_path: tensor}`` of cached CLIP outputs; when given, pixels are
    not loaded. ``bank_text``: also give the bare layout's ids (``bank_ids``, ``bank_lengths``), what
    loss_LM's query reads in a stage whose template is not ``raw`` (docs/design.md §2).
    ``zero_images``: a batch without any image still carries images, zeros (pixels or features), as
    LLaVA gives a text-only sample a zero image: with several processes every rank then runs the vision
    tower and the projector at every step, whatever its rows hold (docs/design.md §9); text rows take
    no image position either way."""

    def __init__(self, encoder: TextEncoder, image_processor: Any = None, mode: str = "train",
                 features: Optional[dict] = None, load_pixels: bool = True, image_aspect_ratio: str = "crop",
                 bank_text: bool = False, zero_images: bool = False) -> None:
        self.enc, self.proc, self.mode = encoder, image_processor, mode
        self.features, self.load_pixels = features, load_pixels
        self.aspect, self.bank_text, self.zero_images = image_aspect_ratio, bank_text, zero_images
        self._pixel_shape = None  # [3, H, W] of the processor's output, for zero images

    def __call__(self, samples: list[Sample]) -> dict[str, Any]:
        ids, labels, leads = [], [], []
        for s in samples:
            if self.mode == "prompt":
                i, k = self.enc.encode_prompt_sample(s)
                l = [IGNORE] * len(i)
            elif self.mode == "text":
                i, l, k = self.enc.encode_sample_bare(s)
            else:
                i, l, k = self.enc.encode_sample(s)
            ids.append(i), labels.append(l), leads.append(k)
        pad = self.enc.tok.pad_token_id
        input_ids, lengths = pad_ids(ids, pad)
        batch = {
            "input_ids": input_ids,
            "labels": pad_ids(labels, IGNORE)[0],
            "text_lengths": lengths,
            "n_lead": torch.tensor(leads, dtype=torch.long),
            "index": torch.tensor([s.index for s in samples], dtype=torch.long),
            "has_image": torch.tensor([s.image is not None and self.mode != "text" for s in samples]),
        }
        if self.bank_text and self.enc.template != "raw":
            # text mode's ids already are the bare layout: the same tensors, not tokenised again
            batch["bank_ids"], batch["bank_lengths"] = (input_ids, lengths) if self.mode == "text" else \
                pad_ids([self.enc.encode_bare(s) for s in samples], pad)
            batch["bank_lead"] = torch.full((len(samples),), len(self.enc.lead), dtype=torch.long)
        if self.mode == "text" or not (batch["has_image"].any() or self.zero_images):
            return batch
        if self.features is not None:
            ref = next(iter(self.features.values()))
            batch["features"] = torch.stack([self.features[s.image] if s.image else torch.zeros_like(ref)
                                             for s in samples])
        elif self.load_pixels:
            paths = [s.image for s in samples if s.image]
            pix = pixel_values(self.proc, paths, self.aspect) if paths else None
            if self._pixel_shape is None:  # the processor's output size, read once
                self._pixel_shape = tuple((pix if pix is not None else image_pixel_values(
                    self.proc, [Image.new("RGB", (8, 8))], self.aspect)).shape[1:])
            full = torch.zeros(len(samples), *self._pixel_shape)
            if pix is not None:
                full[batch["has_image"]] = pix.to(full.dtype)
            batch["pixel_values"] = full
        return batch


IMAGE_TOKEN_INDEX = -200  # LLaVA's stand-in for the image in token ids


def token_view(encoder: TextEncoder, sample: Sample, mode: str = "train") -> dict[str, Any]:
    """``{"text", "input_ids", "labels", "positions"}`` of what a collator in ``mode`` feeds for
    ``sample``, in LLaVA's convention: the image one entry :data:`IMAGE_TOKEN_INDEX` in the ids
    (``<image>`` in the text, decoded from the ids), labels ``-100`` wherever the position is not a
    target; ``positions``: the length the LLM sees (the text, and the image's positions for an image
    row: :meth:`eim.model.splice.TextEncoder.positions`)."""
    ids, labels, at = encoder.encode_sample_bare(sample) if mode == "text" else encoder.encode_sample(sample)
    tok = encoder.tok
    if sample.image is None or mode == "text":
        return {"text": tok.decode(ids), "input_ids": ids, "labels": labels, "positions": len(ids)}
    return {"text": tok.decode(ids[:at]) + "<image>" + tok.decode(ids[at:]),
            "input_ids": ids[:at] + [IMAGE_TOKEN_INDEX] + ids[at:], "labels": labels[:at] + [IGNORE] + labels[at:],
            "positions": encoder.positions(sample, ids)}
