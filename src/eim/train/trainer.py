"""The training loop: a run is its recipe's list of stages (DESIGN §3), driven by ``accelerate``.

Single process::

    eim train clipcap --data DATA/coco --out runs/clipcap

Multi-process (same command, same recipe)::

    accelerate launch -m eim.cli train clipcap --data DATA/coco --out runs/clipcap

Per stage k, ``RUN_DIR/stage-<k>-<name>/`` receives ``model.safetensors`` (the tuned tensors at
the end of the stage), ``metrics.jsonl`` (one line per logged step), ``stage.json`` (wall-clock,
steps, final losses) and, while the stage runs, ``checkpoint/`` (model + optimizer + RNG + data
position) every ``train.save_every`` steps. ``--resume`` skips finished stages and continues the
running one from its checkpoint; the result equals an uninterrupted run.
"""

import json
import math
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eim.io import write_json
from eim.losses import StepContext, build_losses
from eim.train.checkpoint import (load_model_weights, load_optimizer, save_model, save_optimizer,
                                  save_recipe)
from eim.train.collate import Collator


class EpochBatches(torch.utils.data.Sampler):
    """Index batches over many epochs, each epoch a permutation seeded by (seed, epoch).

    Deterministic from its position, so a resumed run sees exactly the batches it would have.
    ``start`` = number of micro-batches already consumed.
    """

    def __init__(self, n, batch_size, seed, total, start=0):
        self.n, self.bs, self.seed, self.total, self.start = n, batch_size, seed, total, start
        self.per_epoch = math.ceil(n / batch_size)

    def __len__(self):
        return self.total - self.start

    def __iter__(self):
        for i in range(self.start, self.total):
            epoch, j = divmod(i, self.per_epoch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            yield perm[j * self.bs : (j + 1) * self.bs].tolist()


def stage_dir(run_dir, k, stage):
    return Path(run_dir) / f"stage-{k}-{stage.name}"


def stage_steps(stage, n_samples, recipe):
    """Optimiser steps of a stage (``steps`` or ``epochs`` × micro-batches / accumulation)."""
    if stage.steps is not None:
        return stage.steps
    micro = math.ceil(n_samples / recipe.train.batch_size)
    return max(1, math.ceil(stage.epochs * micro / recipe.train.grad_accum))


class Trainer:
    """Runs a recipe's stages on a dataset. ``banks``: provider of feature banks for EIM losses
    (:class:`eim.banks.BankProvider`); ``callbacks``: ``f(trainer, stage_index, step)`` after each
    optimiser step (tests use it to interrupt a run)."""

    def __init__(self, recipe, model, tokenizer, image_processor, dataset, run_dir, accelerator=None,
                 banks=None, callbacks=(), quiet=False):
        from accelerate import Accelerator

        self.recipe, self.model, self.tok, self.proc = recipe, model, tokenizer, image_processor
        self.dataset, self.run_dir, self.banks = dataset, Path(run_dir), banks
        self.acc = accelerator or Accelerator(mixed_precision=_mixed_precision(recipe.train.mixed_precision),
                                              cpu=not torch.cuda.is_available())
        self.callbacks, self.quiet = list(callbacks), quiet
        from eim.model.splice import TextEncoder

        self.encoder = TextEncoder(tokenizer, recipe.train.max_length)

    # ------------------------------------------------------------------------------------------
    def run(self, resume=False):
        """Train every stage in order; returns ``[stage summary dicts]``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.acc.is_main_process:
            save_recipe(self.recipe, self.run_dir)
        summaries = []
        for k, stage in enumerate(self.recipe.stages):
            d = stage_dir(self.run_dir, k, stage)
            if resume and (d / "stage.json").exists():
                load_model_weights(self.model, d / "model.safetensors")
                summaries.append(json.loads((d / "stage.json").read_text()))
                self._say(f"stage {k} ({stage.name}): already finished, reusing {d}/model.safetensors")
                continue
            summaries.append(self.run_stage(k, stage, d, resume))
        return summaries

    def run_stage(self, k, stage, d, resume):
        r, model = self.recipe, self.model
        t0 = time.time()
        trainable = self._set_trainable(stage)
        losses = build_losses(stage, r, self.banks, model)
        for m, _ in losses.values():
            m.to(self.acc.device)
        loss_params = [p for m, _ in losses.values() for p in m.parameters() if p.requires_grad]
        total = stage_steps(stage, len(self.dataset), r)
        micro_total = total * r.train.grad_accum
        opt = torch.optim.AdamW(trainable + loss_params, lr=r.stage_lr(stage), weight_decay=r.train.weight_decay)
        from transformers import get_scheduler

        warmup = min(r.train.warmup_steps, max(total // 10, 0))
        sched = get_scheduler(r.train.scheduler, opt, num_warmup_steps=warmup, num_training_steps=total)
        step = 0
        ckpt = d / "checkpoint"
        if resume and (ckpt / "model.safetensors").exists():
            load_model_weights(model, ckpt / "model.safetensors")
            extra = load_optimizer(opt, ckpt / "optimizer")
            step = extra["step"]
            with warnings.catch_warnings():  # fast-forward the schedule; no optimizer step is due
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(step):
                    sched.step()
            torch.set_rng_state(extra["tensors"]["rng"])
            self._say(f"stage {k} ({stage.name}): resuming at step {step}/{total} from {ckpt}")
        elif d.exists() and (d / "metrics.jsonl").exists():
            (d / "metrics.jsonl").unlink()  # a fresh start of this stage replaces its old log
        d.mkdir(parents=True, exist_ok=True)

        vision_in_loop = "vision" in stage.trainable
        features = None
        if not vision_in_loop and r.train.cache_clip_features and any(
                n in stage.losses for n in ("base", "st")):
            features = self._cached_features()
        mode = "text" if set(stage.losses) == {"lm"} and r.eim.lm_query_input == "text" else "train"
        collate = Collator(self.encoder, self.proc, mode=mode, features=features)
        sampler = EpochBatches(len(self.dataset), r.train.batch_size, r.train.seed + 7919 * k, micro_total,
                               start=step * r.train.grad_accum)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=r.train.num_workers)
        model_p, opt_p, loader_p = self.acc.prepare(model, opt, loader)
        model.train()
        need_cls = "ie" in stage.losses
        bar = tqdm(total=total, initial=step, desc=f"stage {k} {stage.name}", disable=self.quiet or not self.acc.is_local_main_process,
                   dynamic_ncols=True)
        last, micro = {}, 0
        for batch in loader_p:
            ctx = StepContext(model, batch, need_cls=need_cls)
            terms = {}
            for name, (m, w) in losses.items():
                terms.update(m(ctx))
            loss = sum(losses[n][1] * terms[f"loss_{n}"] for n in losses)
            self.acc.backward(loss / r.train.grad_accum)
            micro += 1
            if micro % r.train.grad_accum:
                continue
            opt_p.step()
            sched.step()
            opt_p.zero_grad(set_to_none=True)
            step += 1
            last = {"loss": loss.item(), **{n: v.item() for n, v in terms.items()}}
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            if step % r.train.log_every == 0 or step == total:
                self._log(d, {"step": step, **last, "lr": sched.get_last_lr()[0], "time": time.time() - t0})
            if step % r.train.save_every == 0 and step < total:
                self._checkpoint(ckpt, opt, step, stage)
            for cb in self.callbacks:
                cb(self, k, step)
        bar.close()
        if self.acc.is_main_process:
            save_model(model, d / "model.safetensors", {"recipe": r.name, "stage": k, "stage_name": stage.name})
            summary = {"stage": k, "name": stage.name, "steps": total, "losses": stage.losses,
                       "trainable": stage.trainable, "final": last, "seconds": round(time.time() - t0, 3)}
            write_json(summary, d / "stage.json")
            _rmtree(ckpt)
        self.acc.wait_for_everyone()
        return json.loads((d / "stage.json").read_text())

    # ------------------------------------------------------------------------------------------
    def _set_trainable(self, stage):
        """Freeze everything, then unfreeze the stage's segments' tunable parameters."""
        self.model.requires_grad_(False)
        params = []
        for seg in stage.trainable:
            for p in self.model.segment_tunable(seg):
                if not p.requires_grad:
                    p.requires_grad_(True)
                    params.append(p)
        return params

    @torch.inference_mode()
    def _cached_features(self):
        """Frozen-CLIP outputs of every distinct image, computed once per run (ClipCap does this)."""
        if getattr(self, "_feature_cache", None) is not None:
            return self._feature_cache
        paths = sorted({s.image for s in (self.dataset[i] for i in range(len(self.dataset))) if s.image})
        self.model.eval()
        cache = {}
        bs = self.recipe.generation.batch_size * 4
        from eim.data import load_image

        for i in tqdm(range(0, len(paths), bs), desc="CLIP features", disable=self.quiet or not self.acc.is_local_main_process):
            chunk = paths[i : i + bs]
            pix = self.proc(images=[load_image(p) for p in chunk], return_tensors="pt")["pixel_values"]
            feats = self.model.vision(pix.to(self.acc.device)).float().cpu()
            cache.update(zip(chunk, feats))
        self.model.train()
        self._feature_cache = cache
        return cache

    def _checkpoint(self, ckpt, opt, step, stage):
        if not self.acc.is_main_process:
            return
        save_model(self.model, ckpt / "model.safetensors")
        save_optimizer(opt, ckpt / "optimizer", {"step": step, "tensors": {"rng": torch.get_rng_state()}})

    def _log(self, d, record):
        if self.acc.is_main_process:
            with open(d / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _say(self, msg):
        if self.acc.is_main_process and not self.quiet:
            print(msg, flush=True)


def _mixed_precision(mode):
    if mode != "auto":
        return mode
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _rmtree(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)
