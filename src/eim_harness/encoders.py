"""The demo's pretrained encoders, cached (docs/harness.md): a small CLIP and a small LLM (or
SmolLM2-135M), built once per data revision and settings by :mod:`eim_harness.pretrain`.

    from eim_harness.encoders import cached_encoders
    enc = cached_encoders("data/shapes", ".eim-cache")          # {"clip": Path, "lm": Path, "reused": bool}
"""

import hashlib
import json
import time
from pathlib import Path

from eim.digests import file_digest
from eim.data import detect_format, load_dataset
from eim_harness.shapes.quizzes import DRILLS
from eim_harness.pretrain import PRETRAIN_VERSION, drill_lm, pretrain_clip, pretrain_lm
from eim_harness.smol import smol_lm
from eim.errors import EIMError
from eim.io import atomic_dir
from eim.model.splice import TextEncoder
from eim_harness.tokenizer import train_bpe_tokenizer

# The small CLIP of both presets. Tuned on the default shapes data (2000 images x 5 captions) for
# held-out retrieval well above chance within a small share of the demo's budget (its R@1:
# docs/evidence.md §10, its cost: benchmarks/RESULTS.md). Wider or deeper towers sat longer on the
# log(batch) plateau of contrastive training from scratch and ended worse within the same budget.
TINY_CLIP = dict(image_size=64,  # the shapes images are 64 px
                 patch_size=16,  # 4x4 patches + [CLS] = 17 visual tokens
                 width=64, layers=2, heads=4,  # vision tower; its width is what the projector reads
                 text_width=64, text_layers=1,  # captions are short and templated: one layer suffices
                 projection_dim=64,  # CLIP joint space (loss_IE's text bank lives here)
                 steps=500, batch_size=128,  # 32 epochs of the 2000 images, one caption each per visit
                 lr=3e-3, seed=0)

# Presets: everything that decides the weights, so all of it goes into the cache fingerprint.
# Sizes are set by the demo's budget: the whole tiny demo should take minutes on a laptop-class CPU,
# so pretraining both encoders must stay a small part of it (measured: benchmarks/RESULTS.md).
PRESETS = {
    "tiny": {
        "vocab_size": 1024,  # the shapes/ScienceQA/LLaVA text has ~400 words: BPE keeps all whole (945 tokens)
        "clip": TINY_CLIP,
        "lm": dict(arch="gpt2", width=128, layers=2, heads=4,
                   context=64,  # tokens per training window (the trainer keeps <= 64 text tokens)
                   max_positions=128,  # room for image tokens + 64 text tokens downstream
                   steps=300, batch_size=32,  # ~600k tokens: about one pass over the training text
                   lr=2e-3, seed=0),
    },
    # SmolLM2-135M-Instruct is the LLM (eim_harness.smol); the CLIP is the tiny one with its own tokenizer.
    "smol": {"vocab_size": 1024, "clip": TINY_CLIP, "lm": None},
}
# Settings a preset may be given on top (part of the fingerprint only when given, so caches made
# without them stay valid). "drills": after pretraining, instruction-tune the tiny LM on
# drills (eim_harness.pretrain.drill_lm; keys kind — "quiz": multiple choice, with scene_fraction, or
# "yesno": yes/no about scenes in words — problems, steps, batch_size, lr, max_length, seed), the
# skill a real LLaMA brings to ScienceQA and MME (docs/harness.md).
OPTIONAL = ("drills", "corpus")  # corpus: the formats training_texts reads (default CORPUS_FORMATS)
# what the tiny LLM is pretrained on (training_texts); a folder scan takes the first folder of each
# format in name order, so a world's llava/ comes before its vqa/
CORPUS_FORMATS = ("coco", "scienceqa", "llava")


def _say(quiet, msg):
    if not quiet:
        print(msg, flush=True)


def _datasets(data_dir):
    """-> {format: path} of the datasets in ``data_dir`` (one dataset, or a folder of them)."""
    data_dir = Path(data_dir)
    try:
        return {detect_format(data_dir): data_dir}
    except EIMError:
        pass
    found = {}
    if data_dir.is_dir():
        for sub in sorted(data_dir.iterdir()):
            if sub.is_dir():
                try:
                    found.setdefault(detect_format(sub), sub)
                except EIMError:
                    continue
    if "coco" not in found:
        raise EIMError(f"{data_dir}: no COCO-format captions (dataset_coco.json) to pretrain CLIP on; "
                       "run `eim data shapes --out DIR` and pass DIR")
    return found


def training_texts(data_dir, corpus=CORPUS_FORMATS):
    """The LM's training text from the datasets of ``data_dir``: (train texts, held-out texts).

    COCO captions; ScienceQA and LLaVA instruction + response (:func:`sample_texts`: every turn of a
    conversation); only the formats in ``corpus``. MME is evaluation
    data, never read. By default (:data:`CORPUS_FORMATS`) the chatbot mixture's files (``alpaca/``,
    ``vqa/`` of a version-4 world) are left out too, so a world's encoders are those of generator
    version 3 and the studies' measurements stay reproducible; the MME task's tiny LLM reads the
    Alpaca file as well (setting ``corpus``, docs/harness.md). Held-out texts come from the
    ``val`` splits of COCO and ScienceQA.
    """
    train, heldout = [], []
    for fmt, path in _datasets(data_dir).items():
        if fmt not in corpus or fmt == "mme":
            continue
        for split, into in (("train", train), ("val", heldout)):
            if split == "val" and fmt not in ("coco", "scienceqa"):
                continue
            try:
                ds = load_dataset(path, data_format=fmt, split=split, mode="train")
            except EIMError:
                if split == "train":
                    raise
                continue
            into += [text for s in ds for text in sample_texts(s)]
    return train, heldout


# How a conversation's later turns were written into the LM's pretraining text: each turn after its
# history, "Human: q\nAssistant: a\n" per earlier turn. Kept as it was written when the encoders of
# every cached world were pretrained, so that those caches (fingerprinted by their data and settings,
# not by this text) stay what a fresh pretraining gives.
HISTORY = "Human: {question}\nAssistant: {answer}\n"


def sample_texts(sample):
    """The pretraining texts of one sample: each turn, instruction + response joined as the trainer
    joins them (:meth:`eim.model.splice.TextEncoder.join`), after its earlier turns (:data:`HISTORY`)."""
    turns, out = sample.conversation, []
    for k, (q, a) in enumerate(turns):
        q = "".join(HISTORY.format(question=x, answer=y) for x, y in turns[:k]) + q
        out.append(q + TextEncoder.join(q, a))
    return out


def _index_files(data_dir, formats):
    """The index files (JSON) of the datasets the encoders learn from, for the fingerprint."""
    files = []
    for fmt, path in _datasets(data_dir).items():
        if fmt in formats:
            files += load_dataset(path, data_format=fmt, split="train", check_images=False).files
    return sorted({str(f) for f in files})


def preset_settings(preset, overrides=None):
    """A copy of ``PRESETS[preset]`` with ``overrides`` (``{"clip": {...}, "lm": {...}, ...}``) applied."""
    if preset not in PRESETS:
        raise EIMError(f"unknown encoder preset {preset!r}; choose one of {', '.join(PRESETS)}")
    settings = json.loads(json.dumps(PRESETS[preset]))
    for k, v in (overrides or {}).items():
        if k not in settings and k not in OPTIONAL:
            raise EIMError(f"unknown encoder setting {k!r}; known: {', '.join([*settings, *OPTIONAL])}")
        if isinstance(v, dict) and isinstance(settings.get(k), dict):
            settings[k].update(v)
        else:
            settings[k] = v
    return settings


def _fingerprint(preset, settings, files):
    body = {"version": PRETRAIN_VERSION, "preset": preset, "settings": settings,
            "files": {f"{Path(f).parent.name}/{Path(f).name}": file_digest(f) for f in files}}
    body["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return body


def _cached(folder, fp):
    try:
        same = json.loads((folder / "fingerprint.json").read_text()).get("sha256") == fp["sha256"]
    except (OSError, json.JSONDecodeError):
        return False
    return same and all((folder / d / "config.json").exists() for d in fp["folders"])


def cached_encoders(data_dir, cache_dir, preset="tiny", quiet=False, overrides=None):
    """Pretrained CLIP and LLM for the demo: ``{"clip": Path, "lm": Path, "reused": bool}``.

    ``tiny``: the small CLIP (a CLIP-layout tokenizer learned from the captions) and a small GPT-2
    (a GPT-2-layout tokenizer learned from all the training text of ``data_dir``: a dataset, or a
    folder of them as ``eim data shapes`` writes). ``smol``: the small CLIP and SmolLM2-135M-Instruct
    (:func:`eim_harness.smol.smol_lm`, converted once into ``cache_dir``).
    ``overrides``: ``{"clip": {...}, "lm": {...}, "vocab_size": n}`` on top of the preset.

    The pair lives in ``cache_dir/<preset>/`` with ``fingerprint.json`` (sha256 of the dataset
    index files and every setting); a matching folder is reused, anything else is rebuilt in a
    temporary sibling and renamed into place, so an interrupted run never leaves half a cache.
    """
    settings = preset_settings(preset, overrides)
    smol = settings["lm"] is None
    cache_dir = Path(cache_dir)
    if smol:  # first, so a missing package fails before minutes of CLIP pretraining
        lm_path = smol_lm(cache_dir, quiet=quiet)
    final = cache_dir / preset
    folders = ["clip"] if smol else ["clip", "lm"]
    corpus = tuple(settings.get("corpus") or CORPUS_FORMATS)
    fp = _fingerprint(preset, settings, _index_files(data_dir, ("coco",) if smol else corpus))
    fp["folders"] = folders
    result = {"clip": final / "clip", "lm": lm_path if smol else final / "lm"}
    if _cached(final, fp):
        _say(quiet, f"reusing pretrained encoders in {final} (fingerprint {fp['sha256'][:12]} matches)")
        return {**result, "reused": True}
    if (final / "fingerprint.json").exists():
        _say(quiet, f"{final}: data or settings changed, pretraining again")
    t0 = time.perf_counter()
    with atomic_dir(final) as tmp:
        coco = _datasets(data_dir)["coco"]
        texts, heldout = (None, None) if smol else training_texts(data_dir, corpus)
        pretrain_clip(coco, tmp / "clip", vocab_size=settings["vocab_size"], quiet=quiet, **settings["clip"])
        if not smol:
            tok = train_bpe_tokenizer(texts, vocab_size=settings["vocab_size"])
            pretrain_lm(texts, tok, tmp / "lm", val_texts=heldout, quiet=quiet, **settings["lm"])
            if settings.get("drills"):
                d = dict(settings["drills"])
                kind, n = d.pop("kind", "quiz"), d.pop("problems")
                if kind not in DRILLS:
                    raise EIMError(f"unknown drills kind {kind!r}; known: {', '.join(DRILLS)}")
                pairs = DRILLS[kind](n, **({"scene_fraction": d.pop("scene_fraction")} if kind == "quiz" else {}))
                drill_lm(tmp / "lm", pairs, quiet=quiet, **d)
        (tmp / "fingerprint.json").write_text(json.dumps(fp, indent=1) + "\n")
    _say(quiet, f"pretrained encoders saved in {final} in {time.perf_counter() - t0:.0f}s")
    return {**result, "reused": False}
