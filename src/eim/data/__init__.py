"""Datasets in the field's real formats, and a generated multimodal world (docs/design.md §5).

    from eim.data import load_dataset, load_image
    ds = load_dataset("shapes/coco", split="train")        # format detected from the path
    s = ds[0]                                              # Sample(index, image path, ...)
    pixels = load_image(s.image)                           # RGB PIL image, for the collator

``eim data shapes --out DIR`` writes the synthetic world (COCO, ScienceQA, MME and LLaVA
layouts); ``eim data stats PATH`` summarises a dataset; ``eim data check --data PATH``
validates one.
"""

from eim.data.dataset import Dataset
from eim.data.images import check_image, load_image
from eim.data.loader import add_data_args, dataset_from_args, detect_format, load_dataset
from eim.data.sample import Sample

__all__ = ["Dataset", "Sample", "add_data_args", "check_image", "dataset_from_args", "detect_format",
           "load_dataset", "load_image"]
