"""Write the shapes world to disk in the real formats (docs/design.md §5), streaming.

Layout under ``out``::

    shapes_config.json                  the arguments that made this tree
    coco/dataset_coco.json              Karpathy format; 5 captions per image
    coco/images/{train,val,test}/shapes_<split>_<i>.png
    scienceqa/problems.json, pid_splits.json
    scienceqa/captions.json             {"captions": {qid: caption}} for image problems (LaVIN's layout)
    scienceqa/images/{train,val,test}/<qid>/image.png
    mme/existence/<i>.png + <i>.txt             (side-by-side layout)
    mme/count/<i>.png + <i>.txt
    mme/position/images/<i>.png + questions_answers_YN/<i>.txt
    mme/color/images/<i>.png + questions_answers_YN/<i>.txt
    mme_val/...                         the same layout: val//4 other scenes per subtask (choosing on val)
    llava/instruct.json                 images referenced as ../coco/images/train/...
    vqa/llava_vqa.json                  MME-style yes/no questions on the train images (LLaVA format + caption)
    alpaca/alpaca_data.json             scenes in words + a yes/no question (Alpaca format, text only)
    web/dataset_coco.json, web/images/  the web corpus (``--web N``): broader scenes, alt-text style

Determinism: every image and text draws from its own ``random.Random`` seeded by a string
("<seed>:coco:train:17"), PNGs carry no metadata, JSON is written in a fixed key order; the
same arguments give byte-identical trees. Memory: records are written as they are made, only
the qid lists of ``pid_splits.json`` are held (a few bytes per problem).
"""

import json
import os
import random
import shutil

from eim_harness.shapes.captions import captions, tokens
from eim_harness.shapes.problems import image_problem, text_problem
from eim_harness.shapes.questions import (MME_MIN_OBJECTS, MME_SUBTASKS, alpaca_record, llava_conversation,
                                       llava_text_conversation, mme_pair, vqa_turns)
from eim_harness.shapes.scene import png_bytes, render, sample_scene
from eim_harness.shapes.web import WEB_BACKGROUNDS, WEB_MAX_OBJECTS, web_captions
from eim.errors import DataError

SUBDIRS = ("coco", "scienceqa", "mme", "llava", "mme_val", "vqa", "alpaca")
WEB_DIR = "web"  # only with web > 0
SIDE_BY_SIDE = ("existence", "count")  # the other MME subtasks use images/ + questions_answers_YN/
RESTVAL_FRACTION = 0.1  # last 10% of train images are marked restval (the loader joins them)
TEXT_ONLY_FRACTION = 0.25  # ScienceQA problems with no image (real ScienceQA: about half)
LLAVA_TEXT_FRACTION = 0.1  # text-only LLaVA entries, one after roughly every tenth image
# Bumped whenever the same arguments would write a different world, so a cached world from an
# older generator is made again: 2 = ScienceQA choices no longer give the answer away; 3 = ScienceQA
# captions.json (the scene's first COCO caption; problems, images and every other file unchanged);
# 4 = the chatbot mixture's vqa/ and alpaca/ files and MME validation questions, mme_val/ (every
# file of version 3 unchanged); 5 = vqa/ records carry the image's first COCO caption (loss_IE's key).
GENERATOR_VERSION = 5


def shapes_config(seed=0, size=64, train=2000, val=200, test=200, web=0):
    """What ``shapes_config.json`` holds for these arguments (the generator and its version too)."""
    return {"generator": "eim data shapes", "version": GENERATOR_VERSION, "seed": seed, "size": size,
            "train": train, "val": val, "test": test, **({"web": web} if web else {})}


def holds_shapes(out, config):
    """True when ``out`` holds a world this generator wrote with exactly ``config``."""
    try:
        with open(os.path.join(out, "shapes_config.json")) as f:
            return json.load(f) == config
    except (OSError, ValueError):
        return False


def ensure_shapes(out, train, val, test, size=64, web=0, seed=0):
    """Generate the world under ``out`` unless it holds one this generator wrote with exactly these
    arguments (:func:`holds_shapes`); True when it was generated."""
    if holds_shapes(out, shapes_config(seed, size, train, val, test, web)):
        return False
    write_shapes(out, train=train, val=val, test=test, seed=seed, size=size, overwrite=True, web=web)
    return True


class _JsonStream:
    """Write a JSON list or object one item at a time (`head`, items joined by ',', `tail`)."""

    def __init__(self, path, head, tail):
        self.f = open(path, "w", encoding="utf-8", newline="\n")
        self.f.write(head)
        self.tail, self.n = tail, 0

    def add(self, item, key=None):
        text = json.dumps(item)
        if key is not None:
            text = f"{json.dumps(key)}: {text}"
        self.f.write(("\n" if self.n == 0 else ",\n") + text)
        self.n += 1

    def close(self):
        self.f.write("\n" + self.tail)
        self.f.close()


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_shapes(out, train=2000, val=200, test=200, seed=0, size=64, overwrite=False, web=0):
    """Generate the world under `out`; returns a dict of counts (what `eim data shapes` prints).

    ``web``: images of the web corpus (:mod:`eim_harness.shapes.web`) written to ``out/web/``, what the
    encoders are pretrained on in the transfer condition (0: none).
    """
    for name, n in (("train", train), ("val", val), ("test", test), ("web", web)):
        if n < 0:
            raise DataError(f"--{name} must be >= 0 (got {n})")
    if size < 16:
        raise DataError(f"--size must be at least 16 pixels (got {size})")
    out = os.path.abspath(out)
    taken = [d for d in SUBDIRS + (WEB_DIR, "shapes_config.json") if os.path.exists(os.path.join(out, d))]
    if taken and not overwrite:
        raise DataError(f"already holds {', '.join(taken)}", file=out,
                        remedy="choose an empty folder or pass --overwrite")
    for d in taken:  # only what this generator writes: never anything else in `out`
        p = os.path.join(out, d)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    for d in SUBDIRS:
        os.makedirs(os.path.join(out, d), exist_ok=True)

    coco = _JsonStream(os.path.join(out, "coco", "dataset_coco.json"), '{"images": [',
                       '], "dataset": "coco"}\n')
    sqa = _JsonStream(os.path.join(out, "scienceqa", "problems.json"), "{", "}\n")
    llava = _JsonStream(os.path.join(out, "llava", "instruct.json"), "[", "]\n")
    sqa_captions = _JsonStream(os.path.join(out, "scienceqa", "captions.json"), '{"captions": {', "}}\n")
    vqa = _JsonStream(os.path.join(out, "vqa", "llava_vqa.json"), "[", "]\n")
    alpaca = _JsonStream(os.path.join(out, "alpaca", "alpaca_data.json"), "[", "]\n")
    pids = {"train": [], "val": [], "test": []}
    counts = {"images": 0, "captions": 0, "restval": 0, "problems": 0,
              "problems_with_image": 0, "llava_entries": 0, "vqa_entries": 0, "alpaca_records": 0}
    imgid = sentid = 0
    for split, n in (("train", train), ("val", val), ("test", test)):
        n_restval = int(n * RESTVAL_FRACTION) if split == "train" else 0
        for i in range(n):
            rng = random.Random(f"{seed}:coco:{split}:{i}")
            scene = sample_scene(rng)
            caps = captions(rng, scene)
            png = png_bytes(render(scene, size))
            fname = f"shapes_{split}_{i:06d}.png"
            _write(os.path.join(out, "coco", "images", split, fname), png)
            rsplit = "restval" if i >= n - n_restval else split
            sents = []
            for c in caps:
                sents.append({"tokens": tokens(c), "raw": c, "imgid": imgid, "sentid": sentid})
                sentid += 1
            # Field order of Karpathy's file; cocoid differs from imgid as in the real one.
            coco.add({"filepath": f"images/{split}", "sentids": [s["sentid"] for s in sents],
                      "filename": fname, "imgid": imgid, "split": rsplit, "sentences": sents,
                      "cocoid": 500000 + imgid})
            imgid += 1
            counts["images"] += 1
            counts["captions"] += len(caps)
            counts["restval"] += rsplit == "restval"

            # ScienceQA: one problem per scene index; a quarter are text-only instead.
            prng = random.Random(f"{seed}:scienceqa:{split}:{i}")
            qid = str(counts["problems"] + 1)
            if prng.random() < TEXT_ONLY_FRACTION:
                problem = text_problem(prng)
            else:
                problem = image_problem(prng, scene)
                problem["image"] = "image.png"
                _write(os.path.join(out, "scienceqa", "images", split, qid, "image.png"), png)
                sqa_captions.add(caps[0], key=qid)  # as ScienceQA's captions.json: one per image
                counts["problems_with_image"] += 1
            problem["split"] = split
            sqa.add(problem, key=qid)
            pids[split].append(qid)
            counts["problems"] += 1

            if split == "train":  # LLaVA is training data: it reuses the COCO train images
                lrng = random.Random(f"{seed}:llava:{i}")
                llava.add({"id": f"shapes_train_{i:06d}",
                           "image": f"../coco/images/train/{fname}",
                           "conversations": llava_conversation(lrng, scene, lrng.choice(caps))})
                counts["llava_entries"] += 1
                if lrng.random() < LLAVA_TEXT_FRACTION:
                    llava.add({"id": f"text_{i:06d}",
                               "conversations": llava_text_conversation(lrng)})
                    counts["llava_entries"] += 1
                # the chatbot mixture: both questions of an MME-style pair on this image, and a
                # text instruction about another scene written out in words (own seeds each)
                _, convs = vqa_turns(random.Random(f"{seed}:vqa:{i}"), scene)
                for k, conv in enumerate(convs):
                    vqa.add({"id": f"vqa_{i:06d}_{k}", "image": f"../coco/images/train/{fname}",
                             "conversations": conv, "caption": caps[0]})
                    counts["vqa_entries"] += 1
                alpaca.add(alpaca_record(random.Random(f"{seed}:alpaca:{i}"))[0])
                counts["alpaca_records"] += 1
    for s in (coco, sqa, sqa_captions, llava, vqa, alpaca):
        s.close()
    # pid_splits.json: the three splits, trainval, and the mini* subsets (first tenth).
    splits = dict(pids)
    splits["trainval"] = pids["train"] + pids["val"]
    for name in ("train", "val", "test"):
        splits["mini" + name] = pids[name][: max(1, len(pids[name]) // 10)]
    _write(os.path.join(out, "scienceqa", "pid_splits.json"), json.dumps(splits).encode())
    counts["mme_images"] = _write_mme(os.path.join(out, "mme"), test, seed, size)
    counts["mme_val_images"] = _write_mme(os.path.join(out, "mme_val"), val, seed, size, stream="mme-val")
    if web:
        counts["web_images"] = _write_web(os.path.join(out, WEB_DIR), web, seed, size)
    # last: a generation that fails or is interrupted leaves no config, so no cache reuses it
    config = shapes_config(seed, size, train, val, test, web)
    _write(os.path.join(out, "shapes_config.json"), (json.dumps(config, indent=1) + "\n").encode())
    return counts


def _write_web(root, n, seed, size):
    """The web corpus: ``n`` images of broader scenes with web-style captions, Karpathy format."""
    os.makedirs(root, exist_ok=True)
    stream = _JsonStream(os.path.join(root, "dataset_coco.json"), '{"images": [', '], "dataset": "web"}\n')
    sentid = 0
    for i in range(n):
        rng = random.Random(f"{seed}:web:{i}")
        scene = sample_scene(rng, max_objects=WEB_MAX_OBJECTS, backgrounds=WEB_BACKGROUNDS)
        fname = f"web_{i:06d}.png"
        _write(os.path.join(root, "images", fname), png_bytes(render(scene, size)))
        sents = []
        for c in web_captions(rng, scene):
            sents.append({"tokens": tokens(c), "raw": c, "imgid": i, "sentid": sentid})
            sentid += 1
        stream.add({"filepath": "images", "sentids": [s["sentid"] for s in sents], "filename": fname,
                    "imgid": i, "split": "train", "sentences": sents, "cocoid": 900000 + i})
    stream.close()
    return n


def _write_mme(root, n, seed, size, stream="mme"):
    """MME: n//4 images per subtask (at least 1), each with its Yes/No question pair; ``stream``
    seeds the scenes ("mme": the test questions, "mme-val": the validation ones, other scenes)."""
    per = max(1, n // 4)
    total = 0
    for sub in MME_SUBTASKS:
        for i in range(per):
            rng = random.Random(f"{seed}:{stream}:{sub}:{i}")
            pair = None
            while pair is None:  # redraw until the scene can pose this subtask's question
                scene = sample_scene(rng, min_objects=MME_MIN_OBJECTS[sub])
                pair = mme_pair(sub, rng, scene)
            text = "".join(f"{q}\t{a}\n" for q, a in pair).encode()
            name = f"{i:04d}"
            if sub in SIDE_BY_SIDE:
                img_dir = txt_dir = os.path.join(root, sub)
            else:
                img_dir = os.path.join(root, sub, "images")
                txt_dir = os.path.join(root, sub, "questions_answers_YN")
            img, txt = os.path.join(img_dir, name + ".png"), os.path.join(txt_dir, name + ".txt")
            _write(img, png_bytes(render(scene, size)))
            _write(txt, text)
            total += 1
    return total
