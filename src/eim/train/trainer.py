"""The training loop: a run is its recipe's list of stages (DESIGN §3), driven by ``accelerate``.

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
import math
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from eim.distributed import all_reduce_sum, shard_range
from eim.io import load_tensors, save_tensors, write_json
from eim.losses import StepContext, build_losses
from eim.model.splice import IGNORE
from eim.train.checkpoint import (load_model_weights, load_optimizer, save_model, save_optimizer,
                                  save_recipe, tunable_state)
from eim.train.collate import Collator


class EpochBatches(torch.utils.data.Sampler):
    """This rank's share of global index batches over many epochs, each epoch a permutation
    seeded by (seed, epoch).

    Global micro-batch i is ``perm[i·G : (i+1)·G]`` with ``G = batch_size × world``: the same
    samples whatever the process count. Rank r takes its contiguous share (sizes differ by at most
    one in an epoch's short last batch); a rank whose share is empty gets one padding index
    ``n + j`` (a copy of sample j that no loss counts, see :class:`_Rows`). Deterministic from
    its position, so a resumed run sees exactly the batches it would have. ``start`` = number of
    micro-batches already consumed.
    """

    def __init__(self, n, batch_size, seed, total, start=0, world=1, rank=0):
        self.n, self.bs, self.seed, self.total, self.start = n, batch_size, seed, total, start
        self.world, self.rank = world, rank
        self.per_epoch = math.ceil(n / (batch_size * world))

    def __len__(self):
        return self.total - self.start

    def __iter__(self):
        G = self.bs * self.world
        for i in range(self.start, self.total):
            epoch, j = divmod(i, self.per_epoch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            batch = torch.randperm(self.n, generator=g)[j * G : (j + 1) * G]
            off, cnt = shard_range(len(batch), self.world, self.rank)
            yield batch[off : off + cnt].tolist() if cnt else [self.n + int(batch[0])]


class _Rows(torch.utils.data.Dataset):
    """``dataset`` with padding rows: item i is ``(dataset[i mod n], i < n)``."""

    def __init__(self, dataset):
        self.dataset, self.n = dataset, len(dataset)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.dataset[i % self.n], i < self.n


class _ValidCollate:
    """Collate ``(sample, real)`` pairs; ``batch["valid"]`` marks real rows, padding rows get no
    target token (and the InfoNCE losses skip them)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, items):
        batch = self.collate([s for s, _ in items])
        batch["valid"] = torch.tensor([v for _, v in items], dtype=torch.bool)
        if not batch["valid"].all():
            batch["labels"][~batch["valid"]] = IGNORE
        return batch


class StageStep(nn.Module):
    """One stage's forward — the model and the stage's losses — as the single module accelerate
    wraps (DDP/FSDP/DeepSpeed only see calls to the wrapped module's ``forward``).

    ``forward(batch) -> {"loss_<name>": local mean}``. ``image_params``: trainable parameters that
    only image rows reach; with several processes they get a zero gradient on a rank whose batch
    has no image, since DDP expects every trainable parameter to take part in each backward.
    """

    def __init__(self, model, losses, need_cls=False, image_params=()):
        super().__init__()
        self.model = model
        self.losses = nn.ModuleDict({n: m for n, (m, _) in losses.items()})
        self.need_cls = need_cls
        self.image_params = list(image_params)  # plain list: already registered under .model/.losses
        # FSDP's transformer auto-wrap reads _no_split_modules: the blocks of the HF models inside
        self._block_names = sorted({c for m in model.modules() for c in (getattr(m, "_no_split_modules", None) or ())})

    @property
    def _no_split_modules(self):
        """Block classes present now (FSDP2 renames a wrapped class X to FSDPX)."""
        present = {type(m).__name__ for m in self.model.modules()}
        return sorted(n for b in self._block_names for n in (b, "FSDP" + b) if n in present)

    def set_stage(self, losses, need_cls, image_params):
        self.losses = nn.ModuleDict({n: m for n, (m, _) in losses.items()})
        self.need_cls, self.image_params = need_cls, list(image_params)

    def forward(self, batch):
        ctx = StepContext(self.model, batch, need_cls=self.need_cls)
        terms = {}
        for m in self.losses.values():
            terms.update(m(ctx))
        if self.image_params and not bool(batch["has_image"].any()):
            first = next(iter(terms))
            terms[first] = terms[first] + sum(p.reshape(-1)[0] for p in self.image_params) * 0.0
        return terms


def stage_dir(run_dir, k, stage):
    return Path(run_dir) / f"stage-{k}-{stage.name}"


def stage_steps(stage, n_samples, recipe, world=1):
    """Optimiser steps of a stage (``steps`` or ``epochs`` × global micro-batches / accumulation)."""
    if stage.steps is not None:
        return stage.steps
    micro = math.ceil(n_samples / (recipe.train.batch_size * world))
    return max(1, math.ceil(stage.epochs * micro / recipe.train.grad_accum))


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
        from eim.model.splice import TextEncoder

        self.encoder = TextEncoder(tokenizer, recipe.train.max_length)

    @property
    def _engine_shards(self):
        """FSDP / DeepSpeed: parameters and optimizer state are split across ranks."""
        from accelerate.utils import DistributedType

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
        from accelerate.utils import DistributedType

        r, model, acc = self.recipe, self.model, self.acc
        t0 = time.time()
        trainable = self._set_trainable(stage)
        losses = build_losses(stage, r, self.banks, model)
        for m, _ in losses.values():
            m.to(acc.device)
        loss_params = [p for m, _ in losses.values() for p in m.parameters() if p.requires_grad]
        total = stage_steps(stage, len(self.dataset), r, self.world)
        A = r.train.grad_accum
        opt = torch.optim.AdamW(trainable + loss_params, lr=r.stage_lr(stage), weight_decay=r.train.weight_decay)
        from transformers import get_scheduler

        warmup = min(r.train.warmup_steps, max(total // 10, 0))
        # not prepared: accelerate would step it once per process
        sched = get_scheduler(r.train.scheduler, opt, num_warmup_steps=warmup, num_training_steps=total)
        step = 0
        ckpt = d / "checkpoint"
        resuming = resume and (ckpt / "model.safetensors").exists()
        if resuming and not self._engine_shards:
            load_model_weights(model, ckpt / "model.safetensors")
            extra = load_optimizer(opt, ckpt / "optimizer")
            step = extra["step"]
            rng = ckpt / f"rng-{self.rank}.safetensors"  # ranks > 0; rank 0's is in the optimizer file
            torch.set_rng_state(load_tensors(rng)[0]["rng"] if rng.exists() else extra["tensors"]["rng"])
        elif resuming:
            step = json.loads((ckpt / "step.json").read_text())["step"]
        elif d.exists() and (d / "metrics.jsonl").exists() and acc.is_main_process:
            (d / "metrics.jsonl").unlink()  # a fresh start of this stage replaces its old log
        if resuming:
            with warnings.catch_warnings():  # fast-forward the schedule; no optimizer step is due
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(step):
                    sched.step()
            self._say(f"stage {k} ({stage.name}): resuming at step {step}/{total} from {ckpt}")
        d.mkdir(parents=True, exist_ok=True)

        vision_in_loop = "vision" in stage.trainable
        features = None
        if not vision_in_loop and r.train.cache_clip_features and any(
                n in stage.losses for n in ("base", "st")):
            features = self._cached_features()
        mode = "text" if set(stage.losses) == {"lm"} and r.eim.lm_query_input == "text" else "train"
        collate = _ValidCollate(Collator(self.encoder, self.proc, mode=mode, features=features))
        sampler = EpochBatches(len(self.dataset), r.train.batch_size, r.train.seed + 7919 * k, total * A,
                               start=step * A, world=self.world, rank=self.rank)
        loader = torch.utils.data.DataLoader(_Rows(self.dataset), batch_sampler=sampler, collate_fn=collate,
                                             num_workers=r.train.num_workers)
        image_segs = [p for seg in ("vision", "projector") if seg in stage.trainable for p in model.segment_tunable(seg)]
        image_params = (image_segs + loss_params) if self.world > 1 else ()
        step_module = getattr(self, "_fsdp_root", None)
        if step_module is None:
            step_module = StageStep(model, losses, need_cls="ie" in stage.losses, image_params=image_params)
        else:  # FSDP shards the model in place, once: later stages reuse the wrapped root
            step_module.set_stage(losses, "ie" in stage.losses, image_params)
        if acc.state.deepspeed_plugin is not None:  # DeepSpeed wants the batch geometry; we prepare no loader
            acc.state.deepspeed_plugin.deepspeed_config.update(
                train_micro_batch_size_per_gpu=r.train.batch_size, gradient_accumulation_steps=A,
                train_batch_size=r.train.batch_size * A * self.world)
        step_p, opt_p = acc.prepare(step_module, opt)
        if acc.distributed_type == DistributedType.FSDP:
            self._fsdp_root = step_p
        if resuming and self._engine_shards:
            acc.load_state(str(ckpt / "state"))
        step_p.train()
        names = list(losses)
        weights = [losses[n][1] for n in names]
        bar = tqdm(total=total, initial=step, desc=f"stage {k} {stage.name}", disable=self.quiet or not acc.is_main_process,
                   dynamic_ncols=True)
        last = {}
        batches = iter(loader)
        while step < total:
            window = [_to_device(next(batches), acc.device) for _ in range(A)]
            # per-loss item counts (tokens / queries) of each micro-batch, then over all ranks
            counts = [[losses[n][0].count(b) for n in names] for b in window]  # A × L
            n_global = all_reduce_sum(torch.tensor([sum(c[i] for c in counts) for i in range(len(names))],
                                                   dtype=torch.float64, device=acc.device)).tolist()
            sums = torch.zeros(len(names), dtype=torch.float64, device=acc.device)
            for batch, cnt in zip(window, counts):
                with acc.accumulate(step_p):
                    terms = step_p(batch)
                    vals = [terms[f"loss_{n}"] for n in names]
                    # local sum / global count, × world (undoes DDP's mean over ranks) × A
                    # (undoes accelerate's division by grad_accum): gradient of the global mean
                    scale = [c * self.world * A / max(g, 1.0) for c, g in zip(cnt, n_global)]
                    acc.backward(sum(w * s * v for w, s, v in zip(weights, scale, vals)))
                    sums += torch.stack([v.detach().double() for v in vals]) * torch.tensor(
                        cnt, dtype=torch.float64, device=acc.device)
            if acc.distributed_type == DistributedType.FSDP and self.world > 1:
                _average_grads(loss_params)  # a loss's own head joined after FSDP wrapped the root
            opt_p.step()
            sched.step()
            opt_p.zero_grad(set_to_none=True)
            step += 1
            means = (all_reduce_sum(sums) / torch.tensor(n_global, dtype=torch.float64, device=acc.device)
                     .clamp_min(1.0)).tolist()
            terms_g = {f"loss_{n}": v for n, v in zip(names, means)}
            last = {"loss": sum(w * v for w, v in zip(weights, means)), **terms_g}
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            if step % r.train.log_every == 0 or step == total:
                self._log(d, {"step": step, **last, "lr": sched.get_last_lr()[0], "time": time.time() - t0})
            if step % r.train.save_every == 0 and step < total:
                self._checkpoint(ckpt, opt, step_p, step)
            for cb in self.callbacks:
                cb(self, k, step)
        bar.close()
        tensors = self._tunable_tensors(step_p)
        summary = {"stage": k, "name": stage.name, "steps": total, "losses": stage.losses,
                   "trainable": stage.trainable, "final": last, "seconds": round(time.time() - t0, 3)}
        if acc.is_main_process:
            save_tensors(tensors, d / "model.safetensors", {"recipe": r.name, "stage": str(k), "stage_name": stage.name})
            write_json(summary, d / "stage.json")
            _rmtree(ckpt)
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
        if getattr(self, "_feature_cache", None) is not None:
            return self._feature_cache
        paths = sorted({s.image for s in (self.dataset[i] for i in range(len(self.dataset))) if s.image})
        self.model.eval()
        cache = {}
        bs = self.recipe.generation.batch_size * 4
        from eim.data import load_image

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
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    return Accelerator(mixed_precision=_mixed_precision(recipe.train.mixed_precision),
                       cpu=not torch.cuda.is_available(), gradient_accumulation_steps=recipe.train.grad_accum,
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))])


def _average_grads(params):
    """Mean of each gradient over ranks, for parameters FSDP does not manage (plain tensors, not
    the DTensors of the modules it sharded)."""
    from torch.distributed.tensor import DTensor

    from eim.distributed import world_size

    for p in params:
        if p.grad is not None and not isinstance(p, DTensor):
            all_reduce_sum(p.grad).div_(world_size())


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


def _rmtree(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)
