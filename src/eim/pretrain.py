"""Pretrain the small encoders the offline demo stands on, the way a real user has CLIP and GPT-2.

No CLIP or GPT-2 weights can be downloaded here (DESIGN §7), yet EIM only makes sense on top of
*pretrained* encoders: its ``loss_IE`` bank is CLIP.text's view of the captions, its ``loss_LM``
bank is the original LLM's view of the text. So the demo first pretrains, on the training split
only, a small real ``CLIPModel`` (contrastively, CLIP's symmetric InfoNCE with its learnable
logit scale) and a small ``GPT2LMHeadModel`` (language modelling), sharing one byte-level BPE
tokenizer, and saves both as ordinary Hugging Face folders that the rest of ``eim`` loads with
``from_pretrained`` exactly as it would load ``openai/clip-vit-base-patch32`` and ``gpt2``.

    from eim.pretrain import cached_encoders
    enc = cached_encoders("data/shapes", ".eim-cache")          # {"clip": Path, "lm": Path, ...}
    # eim data shapes --out data/shapes  writes the data; the tiny preset takes ~1-2 min on 2 cores

Each folder carries a ``pretrain.json`` with what was measured: CLIP image->text and
text->image R@1 on the held-out val split (and chance level), LM train/val loss and perplexity.
"""

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path

import torch

from eim.errors import EIMError
from eim.io import write_json

PRETRAIN_VERSION = 1  # bump when what pretraining produces changes: invalidates every cache

# The small CLIP of both presets. Tuned on the default shapes data (2000 images x 5 captions):
# ~50 CPU-seconds for ~40% held-out image->text R@1 among 200 images (chance 0.5%). Wider or
# deeper towers sat longer on the log(batch) plateau of contrastive training from scratch and
# ended worse within the same budget.
TINY_CLIP = dict(image_size=64,  # the shapes images are 64 px
                 patch_size=16,  # 4x4 patches + [CLS] = 17 visual tokens
                 width=64, layers=2, heads=4,  # vision tower; its width is what the projector reads
                 text_width=64, text_layers=1,  # captions are short and templated: one layer suffices
                 projection_dim=64,  # CLIP joint space (loss_IE's text bank lives here)
                 steps=500, batch_size=128,  # 32 epochs of the 2000 images, one caption each per visit
                 lr=3e-3, seed=0)

# Presets: everything that decides the weights, so all of it goes into the cache fingerprint.
# Sizes are set by the demo's budget (whole demo <= 10 min on 2 CPU cores): pretraining both
# encoders takes ~1.5 min there.
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
    # SmolLM2-135M-Instruct is the LLM (eim.smol); the CLIP is the tiny one with its own tokenizer.
    "smol": {"vocab_size": 1024, "clip": TINY_CLIP, "lm": None},
}


def _say(quiet, msg):
    if not quiet:
        print(msg, flush=True)


def _coco(dataset, split):
    from eim.data import load_dataset

    if isinstance(dataset, (str, os.PathLike)):
        return load_dataset(dataset, data_format="coco", split=split, mode="train")
    return dataset


def _pairs(dataset):
    """-> (image paths, captions, owner): caption c belongs to image ``owner[c]``."""
    paths, where, captions, owner = [], {}, [], []
    for s in dataset:
        if s.image is None:
            continue
        if s.image not in where:
            where[s.image] = len(paths)
            paths.append(s.image)
        captions.append(s.response)
        owner.append(where[s.image])
    if not captions:
        raise EIMError("pretraining CLIP needs image-caption pairs; the dataset has none")
    return paths, captions, torch.tensor(owner)


def _pixels(paths, processor, chunk=256):
    """All images through the CLIP image processor once: [N, 3, H, W] float32."""
    from eim.data import load_image

    out = []
    for i in range(0, len(paths), chunk):
        images = [load_image(p) for p in paths[i:i + chunk]]
        out.append(processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def _caption_ids(tokenizer, captions, max_len):
    """Each caption as ids + [EOS] (CLIP pools the EOS state), truncated to ``max_len``."""
    eos = tokenizer.eos_token_id
    return [t[: max_len - 1] + [eos] for t in _token_ids(tokenizer, captions)]


def _token_ids(tokenizer, texts):
    """Token ids without special tokens, through the Rust tokenizer directly (no per-text length
    warnings: long texts are cut into windows or truncated by the caller)."""
    return [e.ids for e in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def _text_batch(ids, pad):
    from eim.model.splice import pad_ids

    input_ids, lengths = pad_ids(ids, pad)
    mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
    return input_ids, mask


def _features(out):
    """transformers 5 returns a model output whose pooler_output is the projected embedding."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


@torch.no_grad()
def _embed(model, pixels, ids, pad, chunk=256):
    """Unit image and caption embeddings ([N_img, P], [N_cap, P]) in eval mode."""
    model.eval()
    img = torch.cat([_features(model.get_image_features(pixel_values=pixels[i:i + chunk]))
                     for i in range(0, len(pixels), chunk)])
    txt = []
    for i in range(0, len(ids), chunk):
        input_ids, mask = _text_batch(ids[i:i + chunk], pad)
        txt.append(_features(model.get_text_features(input_ids=input_ids, attention_mask=mask)))
    F = torch.nn.functional
    return F.normalize(img, dim=-1), F.normalize(torch.cat(txt), dim=-1)


def retrieval(model, pixels, ids, owner, pad):
    """CLIP retrieval on a caption set: image->text R@1 (top caption is one of the image's) and
    text->image R@1 (top image is the caption's), with their chance levels."""
    img, txt = _embed(model, pixels, ids, pad)
    sim = img @ txt.T  # [N_img, N_cap]
    i2t = (owner[sim.argmax(1)] == torch.arange(len(img))).float().mean().item()
    t2i = (sim.argmax(0) == owner).float().mean().item()
    per_image = torch.bincount(owner, minlength=len(img)).float()
    return {"images": len(img), "captions": len(ids), "i2t_r1": round(i2t, 4), "t2i_r1": round(t2i, 4),
            "i2t_chance": round((per_image / len(ids)).mean().item(), 4), "t2i_chance": round(1 / len(img), 4)}


def _schedule(optimizer, steps):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)


def _loss_curve(history):
    """First and last loss (mean of the first/last tenth of the steps) and a sparse curve."""
    k = max(1, len(history) // 10)
    every = max(1, len(history) // 20)
    return {"loss_first": round(sum(history[:k]) / k, 4), "loss_last": round(sum(history[-k:]) / k, 4),
            "loss_curve": [[i, round(v, 4)] for i, v in enumerate(history) if i % every == 0 or i == len(history) - 1]}


def new_clip(out_dir, tokenizer, *, image_size=64, patch_size=16, width=64, layers=2, heads=4,
             text_width=None, text_layers=None, projection_dim=64, max_text_len=64, seed=0):
    """Save a randomly initialised ``CLIPModel`` + tokenizer + CLIP image processor to ``out_dir``.

    Like :func:`eim.model.tiny.make_tiny_clip`, with the text tower sized on its own. The text
    config's ``eos_token_id`` is the tokenizer's EOS, so CLIP's pooler takes the state at the
    first EOS (pad is EOS too: the first one ends the caption).
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tw, tl, eos = text_width or width, text_layers or layers, tokenizer.eos_token_id
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=tw, intermediate_size=4 * tw,
                         num_hidden_layers=tl, num_attention_heads=heads, max_position_embeddings=max_text_len,
                         eos_token_id=eos, bos_token_id=eos, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size),
        projection_dim=projection_dim)
    out_dir = Path(out_dir)
    CLIPModel(cfg).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out_dir)
    return out_dir


def pretrain_clip(dataset, out_dir, *, image_size=64, patch_size=16, width=64, layers=2, heads=4,
                  text_width=None, text_layers=None, projection_dim=64, steps=500, batch_size=128,
                  lr=3e-3, seed=0, texts=None, tokenizer=None, vocab_size=1024, eval_dataset="val",
                  quiet=False):
    """Train a small ``CLIPModel`` contrastively on the training (image, caption) pairs; save it.

    dataset: a COCO-format path (its ``train`` split is used) or a loaded dataset of captions.
    texts: extra text the BPE tokenizer also learns from (the LLM's training text, so the LM can
        share the CLIP's tokenizer). tokenizer: use this one instead of training one.
    eval_dataset: held-out pairs for the retrieval numbers: a split name of ``dataset`` (default
        ``val``; skipped when missing), a loaded dataset, or None (R@1 on one training batch).
    Each step takes ``batch_size`` distinct images, each with one of its captions at random
    (so a batch holds no same-image false negatives). Writes model, tokenizer, image processor
    and ``pretrain.json`` to ``out_dir``; returns ``out_dir``.
    """
    from transformers import AutoTokenizer, CLIPModel

    from eim.model.tokenizer import train_bpe_tokenizer
    from eim.train.collate import load_image_processor

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    train = _coco(dataset, "train")
    paths, captions, owner = _pairs(train)
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer(list(captions) + list(texts or []), vocab_size=vocab_size)
    new_clip(out_dir, tokenizer, image_size=image_size, patch_size=patch_size, width=width, layers=layers,
             heads=heads, text_width=text_width, text_layers=text_layers, projection_dim=projection_dim, seed=seed)
    model = CLIPModel.from_pretrained(out_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    processor = load_image_processor(out_dir)
    pad, max_len = tokenizer.pad_token_id, model.config.text_config.max_position_embeddings
    pixels = _pixels(paths, processor)
    ids = _caption_ids(tokenizer, captions, max_len)
    by_image = [[] for _ in paths]
    for c, k in enumerate(owner.tolist()):
        by_image[k].append(c)
    _say(quiet, f"pretraining CLIP ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters) "
                f"on {len(paths)} images / {len(captions)} captions, {steps} steps of {batch_size} "
                f"(preprocessing {time.perf_counter() - t0:.1f}s)")

    t1 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = _schedule(opt, steps)
    bs = min(batch_size, len(paths))
    order, pos, history = torch.randperm(len(paths), generator=gen), 0, []
    model.train()
    for step in range(steps):
        if pos + bs > len(order):
            order, pos = torch.randperm(len(paths), generator=gen), 0
        imgs = order[pos:pos + bs].tolist()
        pos += bs
        pick = torch.randint(0, 1 << 30, (bs,), generator=gen).tolist()
        input_ids, mask = _text_batch([ids[by_image[k][r % len(by_image[k])]] for k, r in zip(imgs, pick)], pad)
        loss = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels[imgs], return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        history.append(loss.item())
        if not quiet and (step + 1) % max(1, steps // 5) == 0:
            print(f"  CLIP step {step + 1}/{steps}: loss {sum(history[-10:]) / len(history[-10:]):.3f}", flush=True)
    train_s = time.perf_counter() - t1

    if isinstance(eval_dataset, str):
        try:
            eval_dataset = _coco(dataset, eval_dataset) if isinstance(dataset, (str, os.PathLike)) else None
        except EIMError:
            eval_dataset = None
    if eval_dataset is not None and len(eval_dataset):
        e_paths, e_caps, e_owner = _pairs(eval_dataset)
        heldout = retrieval(model, _pixels(e_paths, processor), _caption_ids(tokenizer, e_caps, max_len), e_owner, pad)
        heldout["split"] = getattr(eval_dataset, "split", None)
    else:
        heldout = None
    k = torch.arange(min(len(paths), 256))  # one training batch: did it fit at all
    first = torch.tensor([by_image[i][0] for i in k.tolist()])
    on_train = retrieval(model, pixels[k], [ids[c] for c in first.tolist()], torch.arange(len(k)), pad)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    report = {"kind": "clip", "version": PRETRAIN_VERSION, "images": len(paths), "captions": len(captions),
              "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
              "settings": dict(image_size=image_size, patch_size=patch_size, width=width, layers=layers,
                               heads=heads, text_width=text_width or width,
                               text_layers=text_layers or layers, projection_dim=projection_dim,
                               steps=steps, batch_size=batch_size, lr=lr, seed=seed),
              **_loss_curve(history), "logit_scale": round(model.logit_scale.exp().item(), 3),
              "retrieval_heldout": heldout, "retrieval_train_batch": on_train,
              "seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(train_s, 1)}
    write_json(report, out_dir / "pretrain.json")
    r = heldout or on_train
    _say(quiet, f"CLIP pretrained in {report['seconds']:.0f}s: loss {report['loss_first']:.2f} -> "
                f"{report['loss_last']:.2f}, image->text R@1 {r['i2t_r1']:.1%} (chance {r['i2t_chance']:.1%}), "
                f"text->image R@1 {r['t2i_r1']:.1%} (chance {r['t2i_chance']:.1%}) on "
                f"{'held-out ' + str(r.get('split')) if heldout else 'a training batch'}")
    return out_dir


def _stream(tokenizer, texts):
    """Texts -> one LongTensor of ids, each text followed by EOS (GPT-2's document separator)."""
    eos = tokenizer.eos_token_id
    ids = _token_ids(tokenizer, texts) if texts else []
    return torch.tensor([t for doc in ids for t in doc + [eos]], dtype=torch.long)


@torch.no_grad()
def _stream_loss(model, stream, context, max_blocks=256, batch=32):
    """Mean next-token loss over consecutive non-overlapping blocks of ``stream``."""
    n = min(max_blocks, (len(stream) - 1) // context)
    if n <= 0:
        return None
    model.eval()
    blocks = stream[: n * context].view(n, context)
    total = 0.0
    for i in range(0, n, batch):
        b = blocks[i:i + batch]
        total += model(input_ids=b, labels=b).loss.item() * len(b)
    return total / n


def pretrain_lm(texts, tokenizer, out_dir, *, arch="gpt2", width=128, layers=2, heads=4, context=64,
                max_positions=128, steps=300, batch_size=32, lr=2e-3, seed=0, val_texts=None, quiet=False):
    """Train a small causal LM (``gpt2`` or ``llama``) on ``texts`` by language modelling; save it.

    Texts are joined into one stream with EOS after each (as GPT-2 was trained); each step takes
    ``batch_size`` random windows of ``context`` tokens. ``max_positions`` may exceed ``context``
    so downstream inputs (image tokens + text) fit. Writes model, tokenizer and ``pretrain.json``
    (train loss first/last, perplexity, held-out loss on ``val_texts`` when given) to ``out_dir``.
    """
    from transformers import AutoModelForCausalLM

    from eim.model.tiny import make_tiny_lm

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    stream = _stream(tokenizer, texts)
    if len(stream) <= context + 1:
        raise EIMError(f"pretraining the LM needs more than {context} tokens of text, got {len(stream)}")
    make_tiny_lm(out_dir, tokenizer, arch=arch, width=width, layers=layers, heads=heads,
                 max_positions=max_positions, seed=seed)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    _say(quiet, f"pretraining {arch} LM ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters) "
                f"on {len(stream)} tokens, {steps} steps of {batch_size}x{context}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = _schedule(opt, steps)
    window = torch.arange(context)
    history = []
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(stream) - context, (batch_size,), generator=gen)
        x = stream[starts[:, None] + window]  # [B, context]
        loss = model(input_ids=x, labels=x).loss  # the model shifts labels itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append(loss.item())
        if not quiet and (step + 1) % max(1, steps // 5) == 0:
            print(f"  LM step {step + 1}/{steps}: loss {sum(history[-10:]) / len(history[-10:]):.3f}", flush=True)
    train_s = time.perf_counter() - t0
    val = _stream_loss(model, _stream(tokenizer, val_texts), context) if val_texts else None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    curve = _loss_curve(history)
    report = {"kind": "lm", "version": PRETRAIN_VERSION, "arch": arch, "tokens": len(stream),
              "parameters": sum(p.numel() for p in model.parameters()),
              "settings": dict(arch=arch, width=width, layers=layers, heads=heads, context=context,
                               max_positions=max_positions, steps=steps, batch_size=batch_size, lr=lr, seed=seed),
              **curve, "ppl_last": round(math.exp(curve["loss_last"]), 3),
              "val_loss": None if val is None else round(val, 4),
              "val_ppl": None if val is None else round(math.exp(val), 3),
              "seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(train_s, 1)}
    write_json(report, out_dir / "pretrain.json")
    _say(quiet, f"LM pretrained in {report['seconds']:.0f}s: loss {curve['loss_first']:.2f} -> {curve['loss_last']:.2f}"
                f" (perplexity {report['ppl_last']:.1f})"
                + ("" if val is None else f", held-out loss {val:.2f} (perplexity {math.exp(val):.1f})"))
    return out_dir


# --- the demo's cache ----------------------------------------------------------------------------

def _datasets(data_dir):
    """-> {format: path} of the datasets in ``data_dir`` (one dataset, or a folder of them)."""
    from eim.data import detect_format

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


def training_texts(data_dir):
    """The LM's training text from every dataset in ``data_dir``: (train texts, held-out texts).

    COCO captions; ScienceQA and LLaVA/Alpaca instruction + response, joined as the trainer
    joins them (:meth:`eim.model.splice.TextEncoder.join`). MME is evaluation data: never read.
    Held-out texts come from the ``val`` splits of COCO and ScienceQA.
    """
    from eim.data import load_dataset
    from eim.model.splice import TextEncoder

    train, heldout = [], []
    for fmt, path in _datasets(data_dir).items():
        if fmt == "mme":
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
            into += [s.instruction + TextEncoder.join(s.instruction, s.response) for s in ds]
    return train, heldout


def _index_files(data_dir, formats):
    """The index files (JSON) of the datasets the encoders learn from, for the fingerprint."""
    from eim.data import load_dataset

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
        if k not in settings:
            raise EIMError(f"unknown encoder setting {k!r}; known: {', '.join(settings)}")
        if isinstance(v, dict) and isinstance(settings[k], dict):
            settings[k].update(v)
        else:
            settings[k] = v
    return settings


def _fingerprint(preset, settings, files):
    from eim.banks import file_digest

    body = {"version": PRETRAIN_VERSION, "preset": preset, "settings": settings,
            "files": {f"{Path(f).parent.name}/{Path(f).name}": file_digest(f) for f in files}}
    body["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return body


def temp_sibling(final):
    """A new empty folder beside ``final`` (same filesystem, so renaming it into place is atomic);
    made with mkdir, not mkdtemp, so it gets the usual permissions rather than 0700."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def atomic_dir(final):
    """Yield a temporary sibling of ``final`` to fill; on success it replaces ``final``, on any
    error (or interrupt) it is removed, so ``final`` is never half written."""
    tmp = temp_sibling(final)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cached(folder, fp):
    try:
        same = json.loads((folder / "fingerprint.json").read_text()).get("sha256") == fp["sha256"]
    except (OSError, json.JSONDecodeError):
        return False
    return same and all((folder / d / "config.json").exists() for d in fp["folders"])


def cached_encoders(data_dir, cache_dir, preset="tiny", quiet=False, overrides=None):
    """Pretrained CLIP and LLM for the demo: ``{"clip": Path, "lm": Path, "reused": bool}``.

    ``tiny``: the small CLIP and a small GPT-2 sharing one BPE tokenizer trained on all the
    training text of ``data_dir`` (a dataset, or a folder of them as ``eim data shapes`` writes).
    ``smol``: the small CLIP (tokenizer of its own, captions only) and SmolLM2-135M-Instruct
    (:func:`eim.smol.smol_lm`, converted once into ``cache_dir``).
    ``overrides``: ``{"clip": {...}, "lm": {...}, "vocab_size": n}`` on top of the preset.

    The pair lives in ``cache_dir/<preset>/`` with ``fingerprint.json`` (sha256 of the dataset
    index files and every setting); a matching folder is reused, anything else is rebuilt in a
    temporary sibling and renamed into place, so an interrupted run never leaves half a cache.
    """
    settings = preset_settings(preset, overrides)
    smol = settings["lm"] is None
    cache_dir = Path(cache_dir)
    if smol:  # first, so a missing package fails before minutes of CLIP pretraining
        from eim.smol import smol_lm

        lm_path = smol_lm(cache_dir, quiet=quiet)
    final = cache_dir / preset
    folders = ["clip"] if smol else ["clip", "lm"]
    fp = _fingerprint(preset, settings, _index_files(data_dir, ("coco",) if smol else ("coco", "scienceqa", "llava", "alpaca")))
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
        texts, heldout = (None, None) if smol else training_texts(data_dir)
        pretrain_clip(coco, tmp / "clip", texts=texts, vocab_size=settings["vocab_size"], quiet=quiet,
                      **settings["clip"])
        if not smol:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tmp / "clip")  # one tokenizer for both
            pretrain_lm(texts, tok, tmp / "lm", val_texts=heldout, quiet=quiet, **settings["lm"])
        (tmp / "fingerprint.json").write_text(json.dumps(fp, indent=1) + "\n")
    _say(quiet, f"pretrained encoders saved in {final} in {time.perf_counter() - t0:.0f}s")
    return {**result, "reused": False}
