"""Pretrain the small encoders the offline demo stands on, the way a real user has CLIP and GPT-2.

Nothing downloads CLIP or GPT-2 weights at run time (docs/design.md §7), yet EIM only makes sense
on top of *pretrained* encoders: its ``loss_IE`` bank is CLIP.text's view of the captions, its
``loss_LM`` bank is the original LLM's view of the text. So the demo first pretrains, on the
training split only, a small real ``CLIPModel`` (contrastively, CLIP's symmetric InfoNCE with its
learnable logit scale) and a small ``GPT2LMHeadModel`` (language modelling), each with a tokenizer
laid out like the published model's (:mod:`eim_harness.tokenizer`), and saves both as ordinary
Hugging Face folders that the rest of ``eim`` loads with ``from_pretrained`` exactly as it would
load ``openai/clip-vit-base-patch32`` and ``gpt2`` — the same code path, tokens and pooling
included.

    from eim_harness.pretrain import pretrain_clip
    pretrain_clip("data/shapes/coco", "enc/clip")   # eim data shapes --out data/shapes writes the data

Each folder carries a ``pretrain.json`` with what was measured: CLIP image->text and
text->image R@1 on the held-out val split (and chance level), LM train/val loss and perplexity.
:func:`drill_lm` then optionally instruction-tunes the LM on multiple-choice drills, the skill a
real LLaMA brings to ScienceQA (docs/harness.md).
"""

import json
import math
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPModel, get_cosine_schedule_with_warmup

from eim.data import load_dataset, load_image
from eim.errors import EIMError
from eim.io import write_json
from eim.model.splice import IGNORE, TextEncoder, pad_ids
from eim_harness.tiny import make_tiny_clip, make_tiny_lm
from eim_harness.tokenizer import train_clip_tokenizer
from eim.model.vision import features_of, load_image_processor

PRETRAIN_VERSION = 2  # bump when what pretraining produces changes: invalidates every cache (2: CLIP tokenizer layout)


def _say(quiet, msg):
    if not quiet:
        print(msg, flush=True)


def _coco(dataset, split):
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
    out = []
    for i in range(0, len(paths), chunk):
        images = [load_image(p) for p in paths[i:i + chunk]]
        out.append(processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def _caption_ids(tokenizer, captions, max_len):
    """Each caption as the CLIP tokenizer encodes it (``<|startoftext|>`` … ``<|endoftext|>``, cut
    at ``max_len``): the encoding the text bank and every CLIP user read (docs/design.md §2)."""
    return tokenizer(list(captions), truncation=True, max_length=max_len).input_ids


def _token_ids(tokenizer, texts):
    """Token ids without special tokens, through the Rust tokenizer directly (no per-text length
    warnings: long texts are cut into windows or truncated by the caller)."""
    return [e.ids for e in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def _text_batch(ids, pad):
    input_ids, lengths = pad_ids(ids, pad)
    mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
    return input_ids, mask


@torch.no_grad()
def _embed(model, pixels, ids, pad, chunk=256):
    """Unit image and caption embeddings ([N_img, P], [N_cap, P]) in eval mode."""
    model.eval()
    img = torch.cat([features_of(model.get_image_features(pixel_values=pixels[i:i + chunk]))
                     for i in range(0, len(pixels), chunk)])
    txt = []
    for i in range(0, len(ids), chunk):
        input_ids, mask = _text_batch(ids[i:i + chunk], pad)
        txt.append(features_of(model.get_text_features(input_ids=input_ids, attention_mask=mask)))
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
    return get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)


def _loss_curve(history):
    """First and last loss (mean of the first/last tenth of the steps) and a sparse curve."""
    k = max(1, len(history) // 10)
    every = max(1, len(history) // 20)
    return {"loss_first": round(sum(history[:k]) / k, 4), "loss_last": round(sum(history[-k:]) / k, 4),
            "loss_curve": [[i, round(v, 4)] for i, v in enumerate(history) if i % every == 0 or i == len(history) - 1]}


def _update(model, opt, sched, loss, history, step, steps, what, quiet):
    """One optimiser step on ``loss`` (gradients clipped to norm 1), its value kept in ``history``;
    the mean of the last ten printed at every fifth of ``steps``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    history.append(loss.item())
    if not quiet and (step + 1) % max(1, steps // 5) == 0:
        print(f"  {what} step {step + 1}/{steps}: loss {sum(history[-10:]) / len(history[-10:]):.3f}", flush=True)


def pretrain_clip(dataset, out_dir, *, image_size=64, patch_size=16, width=64, layers=2, heads=4,
                  text_width=None, text_layers=None, projection_dim=64, steps=500, batch_size=128,
                  lr=3e-3, seed=0, texts=None, tokenizer=None, vocab_size=1024, eval_dataset="val",
                  quiet=False):
    """Train a small ``CLIPModel`` contrastively on the training (image, caption) pairs; save it.

    dataset: a COCO-format path (its ``train`` split is used) or a loaded dataset of captions.
    texts: extra text the CLIP tokenizer also learns its merges from. tokenizer: a CLIP-layout
        tokenizer to use instead of training one (:func:`eim_harness.tokenizer.train_clip_tokenizer`).
    eval_dataset: held-out pairs for the retrieval numbers: a split name of ``dataset`` (default
        ``val``; skipped when missing), a loaded dataset, or None (R@1 on one training batch).
    Each step takes ``batch_size`` distinct images, each with one of its captions at random
    (so a batch holds no same-image false negatives). Writes model, tokenizer, image processor
    and ``pretrain.json`` to ``out_dir``; returns ``out_dir``.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    train = _coco(dataset, "train")
    paths, captions, owner = _pairs(train)
    if tokenizer is None:
        tokenizer = train_clip_tokenizer(list(captions) + list(texts or []), vocab_size=vocab_size)
    make_tiny_clip(out_dir, tokenizer, image_size=image_size, patch_size=patch_size, width=width, layers=layers,
                   heads=heads, text_width=text_width or width, text_layers=text_layers,
                   projection_dim=projection_dim, legacy_eos=False, seed=seed)  # pooled at the first EOT
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
        _update(model, opt, sched, loss, history, step, steps, "CLIP", quiet)
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
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
        _update(model, opt, sched, loss, history, step, steps, "LM", quiet)
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


def drill_lm(lm_dir, pairs, *, steps=1500, batch_size=32, lr=1e-3, max_length=128, seed=0, quiet=False):
    """Fine-tune the LM in ``lm_dir`` in place on ``(instruction, response)`` pairs, the loss on
    the response only (instruction tuning; the demo's drills, :data:`eim_harness.shapes.quizzes.DRILLS`).
    Sequences are encoded as the trainer encodes them (:class:`eim.model.splice.TextEncoder`); linear
    warm-up over 50 steps, then linear decay.
    Adds ``drills`` (settings, first/last loss, seconds) to ``lm_dir/pretrain.json``."""
    t0 = time.perf_counter()
    lm_dir = Path(lm_dir)
    if not pairs:
        raise EIMError("drilling the LM needs at least one (instruction, response) pair")
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    enc = TextEncoder(tokenizer, max_length=max_length)
    rows = [enc.encode(ins, resp)[:2] for ins, resp in pairs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    _say(quiet, f"drilling the LM on {len(rows)} problems, {steps} steps of {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = min(50, max(1, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / steps))
    history = []
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(rows), (batch_size,), generator=gen).tolist()
        ids, lengths = pad_ids([rows[i][0] for i in idx], pad)
        labels, _ = pad_ids([rows[i][1] for i in idx], IGNORE)
        mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        _update(model, opt, sched, loss, history, step, steps, "drill", quiet)
    model.save_pretrained(lm_dir)
    report = json.loads((lm_dir / "pretrain.json").read_text()) if (lm_dir / "pretrain.json").exists() else {}
    report["drills"] = {"problems": len(rows), "settings": dict(steps=steps, batch_size=batch_size, lr=lr,
                                                                  max_length=max_length, seed=seed),
                        **_loss_curve(history), "seconds": round(time.perf_counter() - t0, 1)}
    write_json(report, lm_dir / "pretrain.json")
    _say(quiet, f"LM drilled in {report['drills']['seconds']:.0f}s: response loss "
                f"{report['drills']['loss_first']:.2f} -> {report['drills']['loss_last']:.2f}")
    return lm_dir
