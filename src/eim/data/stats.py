"""``eim data stats``: what a dataset holds, and how diverse its captions are.

Caption diversity is the mean pairwise BLEU-4 among the captions of one image: every ordered
pair (hypothesis i, reference j != i) is scored with pycocoevalcap's BLEU on lowercased,
whitespace-split text, and the sentence scores are averaged. Near 1 means the five captions
say the same thing in the same words (then BLEU cannot tell a good model from one that learned
a template); COCO's human captions sit far below. ``loo_bleu4`` is the corpus BLEU-4 of each
caption against the other four: the "human agreement" a captioner is usually compared with.
"""

import contextlib
import io
import os
from collections import Counter

from pycocoevalcap.bleu.bleu import Bleu

from eim.data.loader import detect_format, load_dataset
from eim.errors import DataError

SPLITS = {"coco": ("train", "val", "test"), "scienceqa": ("train", "val", "test")}


def caption_bleu(groups, max_images=500):
    """(mean pairwise sentence BLEU-4, leave-one-out corpus BLEU-4) over caption groups."""
    pair_gts, pair_res, loo_gts, loo_res = {}, {}, {}, {}
    for g, caps in enumerate(groups[:max_images]):
        caps = [" ".join(c.lower().split()) for c in caps]
        for i, hyp in enumerate(caps):
            others = caps[:i] + caps[i + 1:]
            if not others:
                continue
            loo_gts[f"{g}.{i}"], loo_res[f"{g}.{i}"] = others, [hyp]
            for j, ref in enumerate(others):
                pair_gts[f"{g}.{i}.{j}"], pair_res[f"{g}.{i}.{j}"] = [ref], [hyp]
    if not pair_res:
        return None, None
    with contextlib.redirect_stdout(io.StringIO()):  # the scorer prints its length ratios
        _, per_pair = Bleu(4).compute_score(pair_gts, pair_res)
        loo, _ = Bleu(4).compute_score(loo_gts, loo_res)
    return sum(per_pair[3]) / len(per_pair[3]), loo[3]


def _coco_stats(path, max_images):
    out = {}
    for split in SPLITS["coco"]:
        ds = load_dataset(path, "coco", split=split, mode="eval")
        groups = [ds[i].meta["references"] for i in range(len(ds))]
        caps = [c for g in groups for c in g]
        pair, loo = caption_bleu(groups, max_images)
        out[split] = {"images": len(ds), "captions": len(caps),
                      "distinct_captions": len(set(caps)),
                      "captions_per_image": round(len(caps) / len(ds), 2) if len(ds) else 0,
                      "pairwise_bleu4": round(pair, 4) if pair is not None else None,
                      "loo_bleu4": round(loo, 4) if loo is not None else None}
    return out


def _scienceqa_stats(path):
    out = {}
    for split in SPLITS["scienceqa"]:
        ds = load_dataset(path, "scienceqa", split=split)
        tags = Counter(t for i in range(len(ds)) for t in ds[i].meta["categories"])
        out[split] = {"problems": len(ds), **{t: tags[t] for t in sorted(tags)}}
    return out


def _other_stats(path, fmt):
    ds = load_dataset(path, fmt)
    samples = list(ds)
    out = {"samples": len(ds), "with_image": sum(s.image is not None for s in samples),
           "distinct_images": len({s.image for s in samples if s.image})}
    if fmt == "mme":
        out["subtasks"] = dict(Counter(s.meta["subtask"] for s in samples))
    return {"all": out}


def _detect(path):
    try:
        return detect_format(path)
    except DataError:
        return None


def dataset_stats(path, data_format=None, max_images=500):
    """{name: {split: {...}}} for a dataset, or for each dataset in a folder of them."""
    path = os.path.abspath(path)
    if data_format is None and os.path.isdir(path) and _detect(path) is None:
        # e.g. the root written by `eim data shapes`: one report per dataset folder inside
        found = {n: _detect(os.path.join(path, n)) for n in sorted(os.listdir(path))
                 if os.path.isdir(os.path.join(path, n))}
        found = {n: f for n, f in found.items() if f}
        if found:
            return {n: next(iter(dataset_stats(os.path.join(path, n), f, max_images).values()))
                    for n, f in found.items()}
    fmt = data_format or detect_format(path)
    name = fmt
    if fmt == "coco":
        return {name: _coco_stats(path, max_images)}
    if fmt == "scienceqa":
        return {name: _scienceqa_stats(path)}
    return {name: _other_stats(path, fmt)}


def format_stats(stats):
    """A small human-readable table of `dataset_stats` output."""
    lines = []
    for name, splits in stats.items():
        lines.append(f"{name}:")
        for split, d in splits.items():
            cells = "  ".join(f"{k}={v}" for k, v in d.items())
            lines.append(f"  {split:<6} {cells}")
    return "\n".join(lines)
