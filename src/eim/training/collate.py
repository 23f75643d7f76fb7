"""Batching samples for the model: images through CLIP's image processor, text through the LLM's
tokenizer (:class:`eim.model.splice.TextEncoder`). Produces the batch dict documented in
:mod:`eim.model.multimodal`.
"""

import torch

from eim.data import load_image
from eim.model.splice import IGNORE, pad_ids


class Collator:
    """``samples -> batch``. ``mode``: ``train`` (ids + labels), ``prompt`` (generation prompt only),
    ``text`` (no image at all). ``features``: optional ``{image_path: tensor}`` of cached CLIP
    outputs; when given, pixels are not loaded."""

    def __init__(self, encoder, image_processor=None, mode="train", features=None, load_pixels=True):
        self.enc, self.proc, self.mode = encoder, image_processor, mode
        self.features, self.load_pixels = features, load_pixels

    def __call__(self, samples):
        ids, labels, leads = [], [], []
        for s in samples:
            if self.mode == "prompt":
                i, k = self.enc.encode_prompt(s.instruction)
                l = [IGNORE] * len(i)
            else:
                i, l, k = self.enc.encode(s.instruction, s.response)
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
        if self.mode == "text" or not batch["has_image"].any():
            return batch
        if self.features is not None:
            ref = next(iter(self.features.values()))
            batch["features"] = torch.stack([self.features[s.image] if s.image else torch.zeros_like(ref)
                                             for s in samples])
        elif self.load_pixels:
            images = [load_image(s.image) for s in samples if s.image]
            pix = self.proc(images=images, return_tensors="pt")["pixel_values"]
            full = pix.new_zeros(len(samples), *pix.shape[1:])
            full[batch["has_image"]] = pix
            batch["pixel_values"] = full
        return batch
