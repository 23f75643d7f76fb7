"""COCO captions in Karpathy's split file (``dataset_coco.json``), docs/design.md §5.

Layout: ``{"images": [{"filepath", "filename", "imgid", "split", "cocoid", "sentences":
[{"raw", "tokens", "sentid"}]}], "dataset": "coco"}``; image files under
``<image_root>/<filepath>/<filename>`` (image_root defaults to the folder holding the JSON).
The Flickr8k/30k files of the same release have no ``filepath``/``cocoid``; they load too.

Two views of one file:

- ``mode="train"``: one sample per (image, caption) pair, the rows of the ``loss_IE`` bank
  (docs/design.md §2: N = number of image-text pairs, ~0.59M for Karpathy train);
- ``mode="eval"``: one sample per image, ``meta["references"]`` = its raw captions (what BLEU
  and CIDEr score against); ``response`` is the first reference.

``restval`` joins ``train`` (as in every Karpathy-split paper). ``image_id`` is the cocoid, or
the imgid where there is none; ``meta["image_key"]`` repeats it so feature banks can mask the
other captions of the same image (docs/design.md §2, ``same_image: mask``).
"""

import os

from eim.data.base import BadRecord, RecordDataset, abspath, read_data_json, require, text_field
from eim.data.sample import Sample
from eim.errors import DataError

FILENAME = "dataset_coco.json"
# Requested split -> record splits it takes; restval is train data in the Karpathy protocol.
SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
RECORD_SPLITS = ("train", "restval", "val", "test")


def record_id(rec, pos):
    """cocoid, else imgid, else the file name, else the position in the list."""
    if isinstance(rec, dict):
        for key in ("cocoid", "imgid", "filename"):
            if rec.get(key) is not None:
                return rec[key]
    return f"#{pos}"


class CocoKarpathy(RecordDataset):
    format = "coco"

    def __init__(self, path, split="train", mode="train", image_root=None, skip_bad=False,
                 check_images=True):
        super().__init__(split, mode, skip_bad)
        if os.path.isdir(path):
            path = os.path.join(path, FILENAME)
        path = os.path.abspath(path)
        if split not in SPLITS:
            raise DataError(
                f"unknown split {split!r} for COCO Karpathy (it has train, val, test; "
                "restval joins train)", file=path, remedy="pass --split train, val or test")
        self.path, self.files = path, [path]
        self.image_root = os.path.abspath(image_root or os.path.dirname(path))
        data = read_data_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError("expected an object with an 'images' list (Karpathy's format)",
                            file=path, remedy="point --data at dataset_coco.json")
        check = self._checker(check_images)
        wanted = SPLITS[split]
        seen = {}
        self._images = []  # (abs image path, image_id, record split, [(sentid, raw), ...])
        for pos, rec in enumerate(data["images"]):
            rid = record_id(rec, pos)
            try:
                require(rec, "filename", "split", "sentences")
                if rid in seen:
                    raise BadRecord(f"duplicate id {rid} (first at position {seen[rid]})")
                seen[rid] = pos
                if rec["split"] not in RECORD_SPLITS:
                    raise BadRecord(f"unknown split {rec['split']!r} (expected one of "
                                    f"{', '.join(RECORD_SPLITS)})")
                if rec["split"] not in wanted:
                    continue  # cheap checks above cover the whole file; images only our split
                sents = rec["sentences"]
                if not isinstance(sents, list) or not sents:
                    raise BadRecord("no sentences")
                caps = []
                for s in sents:
                    if not isinstance(s, dict):
                        raise BadRecord("a sentence is not an object")
                    sid = s.get("sentid")
                    caps.append((sid, text_field(s, "raw", f"caption (sentid {sid})")))
                img = abspath(self.image_root, rec.get("filepath") or "", rec["filename"])
                bad = check(img, rid, path)
                if bad:
                    raise BadRecord(bad)
            except BadRecord as b:
                self._reject(rid, str(b), path)
                continue
            self._images.append((img, rid, rec["split"], caps))
        if mode == "train":
            self._rows = [(k, j) for k, im in enumerate(self._images) for j in range(len(im[3]))]
        else:
            self._rows = list(range(len(self._images)))
        self._finish(check)

    def _sample(self, i, row):
        if self.mode == "train":
            k, j = row
            img, iid, rsplit, caps = self._images[k]
            sentid, raw = caps[j]
            meta = {"image_key": iid, "sentid": sentid, "split": rsplit}
        else:
            img, iid, rsplit, caps = self._images[row]
            raw = caps[0][1]
            meta = {"image_key": iid, "split": rsplit, "references": [c for _, c in caps]}
        meta["filename"] = os.path.basename(img)
        return Sample(index=i, image=img, instruction="", response=raw, image_id=iid, meta=meta)
