"""The training loop: a run is its recipe's list of stages (docs/design.md §3), driven by ``accelerate``.

Single process::

    eim train clipcap --data DATA/coco --out runs/clipcap

Multi-process (same command, same recipe; DDP unless the accelerate config says FSDP/DeepSpeed)::

    accelerate launch -m eim.cli train clipcap --data DATA/coco --out runs/clipcap
    torchrun --nproc-per-node 8 -m eim.cli train clipcap --data DATA/coco --out runs/clipcap

``train.batch_size`` is the *per-process* micro-batch: one optimiser step sees
``batch_size × processes × train.grad_accum`` samples. Each step's global batch is the same
slice of the epoch's permutation whatever the process count, split evenly across ranks, and every
loss is normalised by its *global* count (response tokens for loss_base, queries for the InfoNCE
terms) over ranks and accumulation steps; so W processes with batch b take exactly the steps of
one process with batch W·b (up to float summation order), last partial batch included. Metrics
are the global values; rank 0 alone writes metrics, checkpoints and ``stage.json`` and shows the
progress bar. The run folder must be on a filesystem all ranks see (resume reads it).

Per stage k, ``RUN_DIR/stage-<k>-<name>/`` receives ``model.safetensors`` (the tuned tensors at
the end of the stage), ``metrics.jsonl`` (one line per logged step), ``stage.json`` (wall-clock,
steps, final losses) and, while the stage runs, ``checkpoint/`` (model + optimizer + RNG + data
position) every ``train.save_every`` steps. ``--resume`` skips finished stages and continues the
running one from its checkpoint; the result equals an uninterrupted run.
"""

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm
from transformers import get_scheduler

from eim.data import load_image
from eim.distributed import all_reduce_sum, world_size
from eim.io import load_tensors, save_tensors, write_json
from eim.losses import build_losses
from eim.model.splice import TextEncoder
from eim.train.checkpoint import (load_model_weights, load_optimizer, save_model, save_optimizer,
                                  save_recipe, tunable_state)
from eim.train.collate import Collator
from eim.train.sampler import EpochBatches, Rows, ValidCollate
from eim.train.stage import StageStep, stage_dir, stage_steps


@dataclass
class StageRun:
    """The state of one running stage, built by :meth:`Trainer._setup_stage`."""

    k: int
    stage: object  # eim.config.StageConfig
    dir: Path
    losses: dict  # name -> (module, weight)
    trainable: list  # the model's parameters this stage trains
    loss_params: list  # a loss's own trainable parameters (e.g. a linear loss_IE head)
    opt: torch.optim.Optimizer
    sched: object
    total: int  # optimiser steps
    step: int = 0  # optimiser steps done
    resuming: bool = False
    t0: float = field(default_factory=time.time)
    step_p: object = None  # the prepared StageStep (DDP/FSDP/DeepSpeed wrapper)
    opt_p: object = None  # the prepared optimizer

    @property
    def ckpt(self):
        return self.dir / "checkpoint"

    @property
    def names(self):
        return list(self.losses)

    @property
    def weights(self):
        return [self.losses[n][1] for n in self.losses]


class Trainer:
    """Runs a recipe's stages on a dataset. ``banks``: provider of feature banks for EIM losses
    (:class:`eim.banks.BankProvider`); ``callbacks``: ``f(trainer, stage_index, step)`` after each
    optimiser step (tests use it to interrupt a run)."""

    def __init__(self, recipe, model, tokenizer, image_processor, dataset, run_dir, accelerator=None,
                 banks=None, callbacks=(), quiet=False):
        self.recipe, self.model, self.tok, self.proc = recipe, model, tokenizer, image_processor
        self.dataset, self.run_dir, self.banks = dataset, Path(run_dir), banks
        self.acc = accelerator or make_accelerator(recipe)
        self.acc.gradient_accumulation_steps = recipe.train.grad_accum
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.callbacks, self.quiet = list(callbacks), quiet
        self.encoder = TextEncoder(tokenizer, recipe.train.max_length)
        self._feature_cache = None
        self._fsdp_root = None  # FSDP shards the model in place, once: later stages reuse the root

    @property
    def _engine_shards(self):
        """FSDP / DeepSpeed: parameters and optimizer state are split across ranks."""
        return self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    # ------------------------------------------------------------------------------------------
    def run(self, resume=False):
        """Train every stage in order; returns ``[stage summary dicts]``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model.to(self.acc.device)  # before anything runs it (the CLIP feature cache precedes prepare)
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
        """One stage: set up (optimizer, schedule, resume), prepare, loop, finish."""
        run = self._setup_stage(k, stage, d, resume)
        loader = self._loader(run)
        self._prepare(run)
        bar = tqdm(total=run.total, initial=run.step, desc=f"stage {k} {stage.name}",
                   disable=self.quiet or not self.acc.is_main_process, dynamic_ncols=True)
        last = {}
        batches = iter(loader)
        while run.step < run.total:
            last = self._optimizer_step(run, batches)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            if run.step % self.recipe.train.log_every == 0 or run.step == run.total:
                self._log(d, {"step": run.step, **last, "lr": run.sched.get_last_lr()[0], "time": time.time() - run.t0})
            if run.step % self.recipe.train.save_every == 0 and run.step < run.total:
                self._checkpoint(run.ckpt, run.opt, run.step_p, run.step)
            for cb in self.callbacks:
                cb(self, k, run.step)
        bar.close()
        return self._finish_stage(run, last)

    # --- the named steps of a stage -------------------------------------------------------------
    def _setup_stage(self, k, stage, d, resume):
        """Trainable set, losses, optimizer and schedule; restores them from ``d/checkpoint`` when
        resuming. A fresh start replaces the stage's old ``metrics.jsonl``."""
        r, model, acc = self.recipe, self.model, self.acc
        t0 = time.time()
        trainable = self._set_trainable(stage)
        losses = build_losses(stage, r, self.banks, model)
        for m, _ in losses.values():
            m.to(acc.device)
        loss_params = [p for m, _ in losses.values() for p in m.parameters() if p.requires_grad]
        total = stage_steps(stage, len(self.dataset), r, self.world)
        opt = _adamw(trainable + loss_params, r.stage_lr(stage), r.train.weight_decay, fused=not self._engine_shards)
        warmup = min(r.train.warmup_steps, max(total // 10, 0))
        # not prepared: accelerate would step it once per process
        sched = get_scheduler(r.train.scheduler, opt, num_warmup_steps=warmup, num_training_steps=total)
        run = StageRun(k, stage, d, losses, trainable, loss_params, opt, sched, total, t0=t0)
        run.resuming = resume and (run.ckpt / "model.safetensors").exists()
        if run.resuming and not self._engine_shards:
            load_model_weights(model, run.ckpt / "model.safetensors")
            extra = load_optimizer(opt, run.ckpt / "optimizer")
            run.step = extra["step"]
            rng = run.ckpt / f"rng-{self.rank}.safetensors"  # ranks > 0; rank 0's is in the optimizer file
            torch.set_rng_state(load_tensors(rng)[0]["rng"] if rng.exists() else extra["tensors"]["rng"])
        elif run.resuming:
            run.step = json.loads((run.ckpt / "step.json").read_text())["step"]
        elif d.exists() and (d / "metrics.jsonl").exists() and acc.is_main_process:
            (d / "metrics.jsonl").unlink()  # a fresh start of this stage replaces its old log
        if run.resuming:
            with warnings.catch_warnings():  # fast-forward the schedule; no optimizer step is due
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(run.step):
                    sched.step()
            self._say(f"stage {k} ({stage.name}): resuming at step {run.step}/{total} from {run.ckpt}")
        d.mkdir(parents=True, exist_ok=True)
        return run

    def _loader(self, run):
        """This rank's batches from the stage's current step on: cached frozen-CLIP features when
        CLIP does not train here, text only for a text-mode loss_LM stage."""
        r, stage = self.recipe, run.stage
        features = None
        if "vision" not in stage.trainable and r.train.cache_clip_features and any(
                n in stage.losses for n in ("base", "st")):
            features = self._cached_features()
        mode = "text" if set(stage.losses) == {"lm"} and r.eim.lm_query_input == "text" else "train"
        collate = ValidCollate(Collator(self.encoder, self.proc, mode=mode, features=features))
        A = r.train.grad_accum
        sampler = EpochBatches(len(self.dataset), r.train.batch_size, r.train.seed + 7919 * run.k, run.total * A,
                               start=run.step * A, world=self.world, rank=self.rank)
        return torch.utils.data.DataLoader(Rows(self.dataset), batch_sampler=sampler, collate_fn=collate,
                                           num_workers=r.train.num_workers)

    def _prepare(self, run):
        """Wrap the stage's forward and optimizer with accelerate (DDP / FSDP / DeepSpeed)."""
        r, acc, stage, A = self.recipe, self.acc, run.stage, self.recipe.train.grad_accum
        image_segs = [p for seg in ("vision", "projector") if seg in stage.trainable
                      for p in self.model.segment_tunable(seg)]
        image_params = (image_segs + run.loss_params) if self.world > 1 else ()
        need_cls = "ie" in stage.losses
        if self._fsdp_root is None:
            step_module = StageStep(self.model, run.losses, need_cls=need_cls, image_params=image_params)
        else:  # FSDP shards the model in place, once: later stages reuse the wrapped root
            step_module = self._fsdp_root
            step_module.set_stage(run.losses, need_cls, image_params)
        if acc.state.deepspeed_plugin is not None:  # DeepSpeed wants the batch geometry; we prepare no loader
            acc.state.deepspeed_plugin.deepspeed_config.update(
                train_micro_batch_size_per_gpu=r.train.batch_size, gradient_accumulation_steps=A,
                train_batch_size=r.train.batch_size * A * self.world)
        run.step_p, run.opt_p = acc.prepare(step_module, run.opt)
        if acc.distributed_type == DistributedType.FSDP:
            self._fsdp_root = run.step_p
        if run.resuming and self._engine_shards:
            acc.load_state(str(run.ckpt / "state"))
        run.step_p.train()

    def _optimizer_step(self, run, batches):
        """One optimiser step over ``grad_accum`` micro-batches; returns the step's global losses.

        Normalisation: every loss is a mean over its items (response tokens for loss_base, queries
        for the InfoNCE terms). Each micro-batch's local *sum* is divided by the item count over
        all ranks and accumulation steps, then multiplied by the world size (undoing DDP's mean of
        gradients over ranks) and by ``grad_accum`` (undoing accelerate's division): the gradient
        is that of the global-batch mean, so W processes with batch b equal one with batch W·b.
        """
        acc, A, names, weights = self.acc, self.recipe.train.grad_accum, run.names, run.weights
        window = [_to_device(next(batches), acc.device) for _ in range(A)]
        # per-loss item counts (tokens / queries) of each micro-batch, then over all ranks
        counts = [[run.losses[n][0].count(b) for n in names] for b in window]  # A × L
        n_global = all_reduce_sum(torch.tensor([sum(c[i] for c in counts) for i in range(len(names))],
                                               dtype=torch.float64, device=acc.device)).tolist()
        sums = torch.zeros(len(names), dtype=torch.float64, device=acc.device)
        for batch, cnt in zip(window, counts):
            with acc.accumulate(run.step_p):
                terms = run.step_p(batch)
                vals = [terms[f"loss_{n}"] for n in names]
                scale = [c * self.world * A / max(g, 1.0) for c, g in zip(cnt, n_global)]
                acc.backward(sum(w * s * v for w, s, v in zip(weights, scale, vals)))
                sums += torch.stack([v.detach().double() for v in vals]) * torch.tensor(
                    cnt, dtype=torch.float64, device=acc.device)
        if acc.distributed_type == DistributedType.FSDP and self.world > 1:
            _average_grads(run.loss_params)  # a loss's own head joined after FSDP wrapped the root
        run.opt_p.step()
        run.sched.step()
        run.opt_p.zero_grad(set_to_none=True)
        run.step += 1
        means = (all_reduce_sum(sums) / torch.tensor(n_global, dtype=torch.float64, device=acc.device)
                 .clamp_min(1.0)).tolist()
        return {"loss": sum(w * v for w, v in zip(weights, means)),
                **{f"loss_{n}": v for n, v in zip(names, means)}}

    def _finish_stage(self, run, last):
        """Write the stage's tuned tensors and ``stage.json``, drop its checkpoint; returns the summary."""
        acc, stage = self.acc, run.stage
        tensors = self._tunable_tensors(run.step_p)
        summary = {"stage": run.k, "name": stage.name, "steps": run.total, "losses": stage.losses,
                   "trainable": stage.trainable, "final": last, "seconds": round(time.time() - run.t0, 3)}
        if acc.is_main_process:
            save_tensors(tensors, run.dir / "model.safetensors",
                         {"recipe": self.recipe.name, "stage": str(run.k), "stage_name": stage.name})
            write_json(summary, run.dir / "stage.json")
            shutil.rmtree(run.ckpt, ignore_errors=True)
        acc.wait_for_everyone()
        acc.free_memory()  # drop this stage's wrapper (DDP buckets, engine) before the next stage
        return summary

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
        """Frozen-CLIP outputs of every distinct image, computed once per run (ClipCap does this).

        Every rank computes the whole cache (every rank may draw any sample).
        """
        if self._feature_cache is not None:
            return self._feature_cache
        paths = sorted({s.image for s in (self.dataset[i] for i in range(len(self.dataset))) if s.image})
        self.model.eval()
        cache = {}
        bs = self.recipe.generation.batch_size * 4
        for i in tqdm(range(0, len(paths), bs), desc="CLIP features", disable=self.quiet or not self.acc.is_main_process):
            chunk = paths[i : i + bs]
            pix = self.proc(images=[load_image(p) for p in chunk], return_tensors="pt")["pixel_values"]
            feats = self.model.vision(pix.to(self.acc.device)).float().cpu()
            cache.update(zip(chunk, feats))
        self.model.train()
        self._feature_cache = cache
        return cache

    def _tunable_tensors(self, step_p):
        """``{name: tensor}`` of the tuned parameters, whole (gathered under FSDP/DeepSpeed: a
        collective, every rank calls it; the full tensors land on rank 0)."""
        if not self._engine_shards:
            return tunable_state(self.model)
        names = set(tunable_state(self.model))
        sd = self.acc.get_state_dict(step_p)
        return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.") and k[len("model."):] in names}

    def _checkpoint(self, ckpt, opt, step_p, step):
        """Model + optimizer + RNG at ``step``; every rank returns only once it is written."""
        if self._engine_shards:  # sharded optimizer state: accelerate writes each rank's part
            self.acc.save_state(str(ckpt / "state"))
            tensors = self._tunable_tensors(step_p)
            if self.acc.is_main_process:
                save_tensors(tensors, ckpt / "model.safetensors")
                write_json({"step": step}, ckpt / "step.json")
        else:  # DDP: model and optimizer are replicated, rank 0 writes them; RNG is per rank
            if self.acc.is_main_process:
                save_model(self.model, ckpt / "model.safetensors")
                save_optimizer(opt, ckpt / "optimizer", {"step": step, "tensors": {"rng": torch.get_rng_state()}})
            else:
                save_tensors({"rng": torch.get_rng_state()}, ckpt / f"rng-{self.rank}.safetensors")
        self.acc.wait_for_everyone()  # a job killed after this point resumes from a whole checkpoint

    def _log(self, d, record):
        if self.acc.is_main_process:
            with open(d / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _say(self, msg):
        if self.acc.is_main_process and not self.quiet:
            print(msg, flush=True)


def make_accelerator(recipe):
    """The ``Accelerator`` for a recipe: its precision and accumulation; distribution (DDP, FSDP,
    DeepSpeed, process count) comes from the launcher (``accelerate launch --config_file``,
    ``torchrun``). Collective timeouts are long: rank 0 may be writing a large bank meanwhile."""
    return Accelerator(mixed_precision=_mixed_precision(recipe.train.mixed_precision),
                       cpu=not torch.cuda.is_available(), gradient_accumulation_steps=recipe.train.grad_accum,
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))])


def _average_grads(params):
    """Mean of each gradient over ranks, for parameters FSDP does not manage (plain tensors, not
    the DTensors of the modules it sharded)."""
    for p in params:
        if p.grad is not None and not isinstance(p, DTensor):
            all_reduce_sum(p.grad).div_(world_size())


def _adamw(params, lr, weight_decay, fused=True):
    """AdamW, fused where torch has the kernel for these parameters (CPU, CUDA): one pass per
    tensor instead of seven, the same update to float rounding (issue 16: 0.15 s instead of 1.0 s
    for 119M parameters on 2 CPU cores). FSDP/DeepSpeed keep their engine's default."""
    if fused and params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except RuntimeError:  # torch < 2.4 has no fused AdamW for CPU tensors
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _to_device(batch, device):
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _mixed_precision(mode):
    if mode != "auto":
        return mode
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):  # `accelerate launch` with a config: it decides
        return None
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"
