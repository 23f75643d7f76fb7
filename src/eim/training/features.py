"""The frozen-CLIP feature cache (docs/design.md §3): CLIP's outputs of every distinct training
image, computed once, as ClipCap does, and read by the stages that do not train CLIP."""

import hashlib
from collections.abc import Sequence
from typing import Any, Union

import torch

from eim.data.dataset import Dataset
from eim.model.multimodal import MultimodalLM
from eim.progress_bar import progress_bar
from eim.training.collate import pixel_values


class FeatureCache:
    """``get() -> {image path: features}``, computed when a stage first needs it and again
    whenever CLIP has changed since (a stage trained it, or its weights were loaded): never stale.

    The key is a digest of the vision parameters' values, computed when a stage asks (version
    counters would be cheaper, but fused optimiser kernels update parameters without bumping
    them). Every rank computes the whole cache (every rank may draw any sample).
    """

    def __init__(self, model: MultimodalLM, datasets: Sequence[Dataset], image_processor: Any, batch_size: int,
                 device: Union[str, torch.device], quiet: bool = True, image_aspect_ratio: str = "crop") -> None:
        """``datasets``: the datasets whose distinct images are cached (once each); ``image_aspect_ratio``:
        as the collator prepares the images (:func:`eim.training.collate.pixel_values`)."""
        self.datasets, self.aspect = list(datasets), image_aspect_ratio
        self.model, self.proc = model, image_processor
        self.batch_size, self.device, self.quiet = batch_size, device, quiet
        self._version, self._cache = None, None

    def version(self) -> str:
        h = hashlib.sha256()
        for p in self.model.vision.parameters():
            h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    @torch.inference_mode()
    def get(self) -> dict[str, torch.Tensor]:
        version = self.version()
        if self._cache is not None and self._version == version:
            return self._cache
        paths = sorted({s.image for d in self.datasets for s in (d[i] for i in range(len(d))) if s.image})
        self.model.eval()
        cache = {}
        bs = self.batch_size
        for i in progress_bar(range(0, len(paths), bs), desc="CLIP features", disable=self.quiet):
            chunk = paths[i : i + bs]
            pix = pixel_values(self.proc, chunk, self.aspect)
            feats = self.model.vision(pix.to(self.device)).float().cpu()
            cache.update(zip(chunk, feats))
        self.model.train()
        self._version, self._cache = version, cache
        return cache


def reads_feature_cache(recipe, stage):
    """Whether ``stage`` reads this cache (docs/design.md §3): it does not train CLIP,
    the recipe caches, and a loss that reads the ST's input runs."""
    return ("vision" not in stage.trainable and recipe.train.cache_clip_features
            and any(n in stage.losses for n in ("base", "st")))
