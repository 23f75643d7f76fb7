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

Stage k runs in ``RUN_DIR/stage-<k>-<name>.partial/``: ``metrics.jsonl`` (one line per logged
step) and ``checkpoint/`` (model + optimizer + RNG + data position, every ``train.save_every``
steps, swapped in whole). When it finishes, ``model.safetensors`` (the parameters it trained, over
which the earlier stages' files and the pretrained models supply the rest),
``stage.json`` (wall-clock, steps, final losses) and the RNG state are written and the folder is
renamed to ``stage-<k>-<name>/`` (:mod:`eim.training.run_dir` keeps a failed command from changing
what the folder held). ``--resume`` reuses finished stages and continues the running one from its
checkpoint; the result is bit-identical to an uninterrupted run wherever the kill happened.
"""

import json
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers import PreTrainedTokenizerBase, get_scheduler

from eim.config import Recipe, StageConfig
from eim.data.dataset import Dataset
from eim.distributed import all_reduce_sum, average_grads, broadcast_object
from eim.errors import WriteError
from eim.io import load_tensors, replace_dir, save_tensors, write_json
from eim.losses import BankSource, build_losses, stage_banks
from eim.model.multimodal import MultimodalLM
from eim.training.accelerator import check_partitioned_reads, make_accelerator, zero_stage
from eim.training.collate import to_device
from eim.training.checkpoint import (LOSS_PREFIX, load_model_weights, load_optimizer, load_rng, rng_state,
                                     save_optimizer, save_rng, set_rng_state)
from eim.training.gather import whole_tensors
from eim.training.run_dir import RunFolder, identity
from eim.training.features import FeatureCache, reads_feature_cache
from eim.training.loader import stage_loader
from eim.training.progress import StageProgress, due
from eim.training.tracking import Tracking, batch_samples, batch_tokens, image_positions
from eim.training.validation import Validation
from eim.training.optim import adamw
from eim.training.stage import (StageRun, StageStep, resolve_datasets, set_stage_modes, stage_data_name, stage_steps,
                                unfreeze)


class Trainer:
    """Runs a recipe's stages on ``datasets`` (``{name: dataset}``, :data:`eim.config.MAIN` for the
    stages that name no data; :func:`eim.training.stage.resolve_datasets`). ``banks``: the feature
    banks of each dataset (``{name: provider}``, :class:`eim.banks.BankProvider`) when the EIM losses
    need them; ``callbacks``: ``f(trainer, stage_index, step)`` after each optimiser step (tests use
    it to interrupt a run)."""

    def __init__(self, recipe: Recipe, model: MultimodalLM, tokenizer: PreTrainedTokenizerBase, image_processor: Any,
                 datasets: Mapping[str, Dataset], run_dir: Union[str, Path], accelerator: Optional[Accelerator] = None,
                 banks: Optional[Mapping[str, BankSource]] = None, callbacks: Sequence[Callable] = (),
                 quiet: bool = False, val_datasets: Optional[Mapping[str, Dataset]] = None) -> None:
        self.recipe, self.model, self.tok, self.proc = recipe, model, tokenizer, image_processor
        self.datasets, self.run_dir = resolve_datasets(recipe, datasets), Path(run_dir)
        self.banks = None if banks is None else dict(banks)
        self.acc = accelerator or make_accelerator(recipe, run_dir)
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.callbacks, self.quiet = list(callbacks), quiet
        # one cache over every dataset's images (LLaVA's captions and instructions share theirs)
        self.features = FeatureCache(model, list(self.datasets.values()), image_processor,
                                     recipe.generation.batch_size * 4, self.acc.device,
                                     quiet=quiet or not self.acc.is_main_process,
                                     image_aspect_ratio=recipe.data.image_aspect_ratio)
        self._fsdp_root = None  # FSDP shards the model in place, once: later stages reuse the root
        self._built_dtypes = {n: p.dtype for n, p in model.named_parameters()}  # restored between stages
        self.positions = image_positions(model)  # an image's positions in the LLM input (tokens/s)
        self.validation = Validation(self, dict(val_datasets or {}))  # refuses what it cannot do, before any training
        check_partitioned_reads(recipe, zero_stage(self.acc) == 3)
        if recipe.train.gradient_checkpointing:
            model.set_gradient_checkpointing(True)

    @property
    def _engine_shards(self):
        """FSDP / DeepSpeed: parameters and optimizer state are split across ranks."""
        return self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    # ------------------------------------------------------------------------------------------
    def run(self, resume: bool = False, overwrite: bool = False) -> list[dict[str, Any]]:
        """Train every stage in order; returns ``[stage summary dicts]``.

        Nothing in the run folder is touched before :meth:`RunFolder.check` has accepted it
        (:mod:`eim.training.run_dir`: a different run, or output without ``resume``, is refused
        unless ``overwrite``); each stage runs in its ``.partial`` folder, moved into place when
        it finishes."""
        acc = self.acc
        self.folder = RunFolder(self.run_dir, identity(self.recipe, self.datasets, models=acc.is_main_process),
                                main=acc.is_main_process)
        self.folder.accept(broadcast_object(self.folder.check(resume, overwrite) if acc.is_main_process else None))
        acc.wait_for_everyone()
        self.model.to(acc.device)  # before anything runs it (the CLIP feature cache precedes prepare)
        totals = [stage_steps(s, len(self.stage_dataset(s)), self.recipe, self.world) for s in self.recipe.stages]
        self._offsets = [sum(totals[:k]) for k in range(len(totals))]
        self._later = [sum(totals[k + 1:]) for k in range(len(totals))]
        self.tracking = Tracking(acc, self.recipe, self.run_dir, self.folder.ident["data"])
        self.tracking.start(resume)
        summaries = []
        for k, stage in enumerate(self.recipe.stages):
            state = broadcast_object(self.folder.stage_state(k, stage, resume) if acc.is_main_process else None)
            acc.wait_for_everyone()
            d = self.folder.final(k, stage)
            if state == "finished":
                load_model_weights(self.model, d / "model.safetensors")
                load_rng(d, self.rank)  # the next stage starts from the RNG this one ended with
                summaries.append(json.loads((d / "stage.json").read_text()))
                self._say(f"stage {k} ({stage.name}): already finished, reusing {d}/model.safetensors")
                continue
            part = self.folder.start(k, stage, fresh=state == "fresh")
            try:
                summaries.append(self.run_stage(k, stage, part, state == "resume"))
            except BaseException:
                self.folder.abandon(k, stage)  # keeps it only when it holds a checkpoint to resume
                raise
        self.folder.write_identity()  # a run that reused every stage may have new generation settings
        self.tracking.finish()
        return summaries

    def run_stage(self, k: int, stage: StageConfig, d: Path, resume: bool) -> dict[str, Any]:
        """One stage: set up (optimizer, schedule, resume), prepare, loop, finish."""
        run = self._setup_stage(k, stage, d, resume)
        loader = self._loader(run)
        self._prepare(run)
        progress = StageProgress(run, self.recipe.train.log_every, self.tracking, self._offsets[k], self._later[k],
                                 main=self.acc.is_main_process, quiet=self.quiet)
        last = {}
        batches = iter(loader)  # draws a seed from the RNG: restore the checkpoint's after it
        if run.rng is not None:
            set_rng_state(run.rng)
        while run.step < run.total:
            last = self._optimizer_step(run, batches)
            progress.step(last)
            if self.validation.due(run.step, run.total):
                progress.validation(self.validation.losses(stage, k))
            if run.step % self.recipe.train.save_every == 0 and run.step < run.total:
                self._checkpoint(run)
            for cb in self.callbacks:
                cb(self, k, run.step)
        rates = progress.close()
        if self.recipe.train.eval_generate:  # the task metric on the held-out data, in the stage folder
            progress.validation(self.validation.generate(stage, d / "eval-val"))
        return self._finish_stage(run, last, rates)

    # --- the named steps of a stage -------------------------------------------------------------
    def _setup_stage(self, k, stage, d, resume):
        """Trainable set, losses, optimizer and schedule; restores them from ``d/checkpoint`` when
        resuming (``d`` is the stage's ``.partial`` folder, emptied for a fresh start)."""
        r, model, acc = self.recipe, self.model, self.acc
        t0 = time.time()
        trainable = self._set_trainable(stage)
        self._build_banks(stage)
        losses = build_losses(stage, r, self._stage_banks(stage), model)
        for m, _ in losses.values():
            m.to(acc.device)
        loss_params = [p for m, _ in losses.values() for p in m.parameters() if p.requires_grad]
        total = stage_steps(stage, len(self.stage_dataset(stage)), r, self.world)
        opt = adamw(trainable + loss_params, r.stage_lr(stage), r.train.weight_decay, fused=not self._engine_shards)
        warmup = min(r.train.warmup_steps, max(total // 10, 0))
        # not prepared: accelerate would step it once per process
        sched = get_scheduler(r.train.scheduler, opt, num_warmup_steps=warmup, num_training_steps=total)
        run = StageRun(k, stage, d, losses, trainable, loss_params, opt, sched, total, t0=t0)
        ids = {id(p) for p in trainable}
        run.param_names = [n for n, p in model.named_parameters() if id(p) in ids]
        run.resuming = resume
        if run.resuming and not self._engine_shards:
            load_model_weights(model, run.ckpt / "model.safetensors", losses={n: m for n, (m, _) in losses.items()})
            extra = load_optimizer(opt, run.ckpt / "optimizer")
            run.step, run.rng = extra["step"], extra["tensors"] or None  # (rank 0's, in older checkpoints)
        elif run.resuming:
            run.step = json.loads((run.ckpt / "step.json").read_text())["step"]
        if run.resuming:
            rng = run.ckpt / f"rng-{self.rank}.safetensors"  # set once the loader's iterator exists
            run.rng = load_tensors(rng)[0] if rng.exists() else run.rng
            with warnings.catch_warnings():  # fast-forward the schedule; no optimizer step is due
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(run.step):
                    sched.step()
            self._say(f"stage {k} ({stage.name}): resuming at step {run.step}/{total} from {run.ckpt}")
        acc.wait_for_everyone()  # the .partial folder exists before anyone writes into it
        return run

    def _loader(self, run):
        """This rank's batches from the stage's current step on (:func:`eim.training.loader.stage_loader`):
        cached frozen-CLIP features when CLIP does not train here and the recipe caches them."""
        r, stage = self.recipe, run.stage
        features = self.features.get() if reads_feature_cache(r, stage) else None
        return stage_loader(r, stage, run.k, self.stage_dataset(stage), self.tok, self.proc, run.total, run.step,
                            self.world, self.rank, features=features, cuda=self.acc.device.type == "cuda",
                            image_positions=self.positions)

    def _prepare(self, run):
        """Wrap the stage's forward and optimizer with accelerate (DDP / FSDP / DeepSpeed)."""
        r, acc, stage = self.recipe, self.acc, run.stage
        batch, A = r.stage_batch(stage)
        acc.gradient_accumulation_steps = A
        need_cls = "ie" in stage.losses
        if self._fsdp_root is None:
            step_module = StageStep(self.model, run.losses, need_cls=need_cls)
        else:  # FSDP shards the model in place, once: later stages reuse the wrapped root
            step_module = self._fsdp_root
            step_module.set_stage(run.losses, need_cls)
        if acc.state.deepspeed_plugin is not None:  # DeepSpeed wants the batch geometry; we prepare no loader
            acc.state.deepspeed_plugin.deepspeed_config.update(
                train_micro_batch_size_per_gpu=batch, gradient_accumulation_steps=A, train_batch_size=batch * A * self.world,
                gradient_clipping=r.train.max_grad_norm or 0.0)
        run.step_p, run.opt_p = acc.prepare(step_module, run.opt)
        if acc.distributed_type == DistributedType.FSDP:
            self._fsdp_root = run.step_p
        if run.resuming and self._engine_shards:  # a DeepSpeed checkpoint holds the trained parameters only
            deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
            acc.load_state(str(run.ckpt / "state"), **({"load_module_strict": False} if deepspeed else {}))
        set_stage_modes(self.model, run.step_p, run.stage.trainable, self.recipe.train.gradient_checkpointing)

    def _optimizer_step(self, run, batches):
        """One optimiser step over ``grad_accum`` micro-batches; returns the step's global losses.

        Normalisation: every loss is a mean over its items (response tokens for loss_base, queries
        for the InfoNCE terms). Each micro-batch's local *sum* is divided by the item count over
        all ranks and accumulation steps, then multiplied by the world size (undoing DDP's mean of
        gradients over ranks) and by ``grad_accum`` (undoing accelerate's division): the gradient
        is that of the global-batch mean, so W processes with batch b equal one with batch W·b.
        """
        acc, A, names, weights = self.acc, self.recipe.stage_batch(run.stage)[1], run.names, run.weights
        host = [next(batches) for _ in range(A)]
        window = [to_device(b, acc.device, non_blocking=True) for b in host]
        # per-loss item counts (tokens / queries) of each micro-batch and the window's samples and
        # tokens (tokens/s), read from the host batches (no device sync), then over all ranks at once
        counts = [[run.losses[n][0].count(b) for n in names] for b in host]  # A × L
        local = [sum(c[i] for c in counts) for i in range(len(names))] + [
            sum(batch_samples(b) for b in host), sum(batch_tokens(b, self.positions) for b in host)]
        *n_global, n_samples, n_tokens = all_reduce_sum(torch.tensor(local, dtype=torch.float64,
                                                                     device=acc.device)).tolist()
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
            average_grads(run.loss_params)  # a loss's own head joined after FSDP wrapped the root
        norm, log = None, due(run.step + 1, run.total, self.recipe.train.log_every)
        if self.recipe.train.max_grad_norm:  # accelerate's clipping (DeepSpeed clips in its engine: gradient_clipping)
            norm = acc.clip_grad_norm_(run.step_p.parameters(), self.recipe.train.max_grad_norm)
        elif log and acc.distributed_type != DistributedType.DEEPSPEED:  # the norm alone, on the rows that log it
            norm = acc.clip_grad_norm_(run.step_p.parameters(), float("inf"))
        run.opt_p.step()
        run.sched.step()
        run.opt_p.zero_grad(set_to_none=True)
        run.step += 1
        means = (all_reduce_sum(sums) / torch.tensor(n_global, dtype=torch.float64, device=acc.device)
                 .clamp_min(1.0)).tolist()
        # a term with no items in the step over all ranks (loss_IE on a text-only batch) is absent, not 0
        present = [(n, w, v) for n, w, v, g in zip(names, weights, means, n_global) if g > 0]
        out = {"loss": sum(w * v for _, w, v in present), **{f"loss_{n}": v for n, _, v in present}}
        if norm is not None:
            out["grad_norm"] = float(norm)  # before clipping
        return {**out, "samples": int(n_samples), "tokens": int(n_tokens)}

    def _finish_stage(self, run, last, rates):
        """Write the stage's tuned tensors, ``stage.json`` and RNG states, drop its checkpoint and
        move the folder into place; returns the summary."""
        acc, stage = self.acc, run.stage
        tensors = whole_tensors(self.model, run.param_names, acc.is_main_process)  # what this stage trained
        summary = {"stage": run.k, "name": stage.name, "steps": run.total, "losses": stage.losses,
                   "trainable": stage.trainable, "final": {k: v for k, v in last.items() if k.startswith("loss")},
                   "seconds": round(time.time() - run.t0, 3), **rates}
        save_rng(run.dir, self.rank)  # every rank its own: where the next stage's RNG starts
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_tensors(tensors, run.dir / "model.safetensors",
                         {"recipe": self.recipe.name, "stage": str(run.k), "stage_name": stage.name})
            write_json(summary, run.dir / "stage.json")  # from here the stage counts as finished
            shutil.rmtree(run.ckpt, ignore_errors=True)
            self.folder.commit(run.k, stage)  # .partial -> stage-<k>-<name>/
        acc.wait_for_everyone()
        acc.free_memory()  # drop this stage's wrapper (DDP buckets, engine) before the next stage
        return summary

    # ------------------------------------------------------------------------------------------
    def _set_trainable(self, stage):
        """Freeze everything, then unfreeze the stage's segments' tunable parameters, in float32 (the
        optimiser updates float32 weights) unless DeepSpeed keeps the float32 master copy itself
        (docs/design.md §9). Between stages every weight returns to the dtype it was built in: a 16-bit
        LLM that one stage trained is 16-bit again while a later stage keeps it frozen (its memory),
        and a run resumed from a finished stage's float32 file holds exactly what it would have held."""
        if not self._engine_shards:
            for name, p in self.model.named_parameters():
                if p.dtype != self._built_dtypes.get(name, p.dtype):
                    p.data = p.data.to(self._built_dtypes[name])
        return unfreeze(self.model, stage.trainable, float32=self.acc.distributed_type != DistributedType.DEEPSPEED)

    def _checkpoint(self, run):
        """The stage's trained parameters + optimizer + RNG at its current step, written into
        ``checkpoint.tmp/`` and swapped in whole (:func:`eim.io.replace_dir`): a kill or a full disk at
        any point leaves the previous checkpoint usable. Under DeepSpeed / FSDP the engine writes its own
        shards (weights included) and nothing is gathered. Every rank returns only once it is in place."""
        acc, ckpt, step = self.acc, run.ckpt, run.step
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            if self._engine_shards:  # sharded weights and optimizer state: accelerate writes each rank's part
                # DeepSpeed: not the frozen weights (13.5 GB of a frozen 7B LLM in a projector stage), which the
                # pretrained models and the earlier stages' files give back on resume
                frozen = {"exclude_frozen_parameters": True} if acc.distributed_type == DistributedType.DEEPSPEED else {}
                acc.save_state(str(tmp / "state"), **frozen)
                if acc.is_main_process:
                    write_json({"step": step}, tmp / "step.json")
            elif acc.is_main_process:  # DDP: model and optimizer are replicated, rank 0 writes them
                tensors = whole_tensors(self.model, run.param_names, main=True)  # what this stage trains
                tensors.update((f"{LOSS_PREFIX}{name}.{n}", q) for name, (m, _) in run.losses.items()
                               for n, q in m.named_parameters() if q.requires_grad)
                save_tensors(tensors, tmp / "model.safetensors")
                save_optimizer(run.opt, tmp / "optimizer", {"step": step})
            save_tensors(rng_state(), tmp / f"rng-{self.rank}.safetensors")  # RNG is per rank
        except WriteError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            kept = (f"the checkpoint at {ckpt} is intact: free space, then run again with --resume" if ckpt.exists()
                    else "this stage had no checkpoint yet: free space, then run again with --resume")
            raise WriteError(f"cannot write {getattr(e, 'path', tmp)}: {getattr(e, 'reason', e)}; {kept}") from e
        acc.wait_for_everyone()
        if acc.is_main_process:
            replace_dir(tmp, ckpt)
        acc.wait_for_everyone()  # a job killed after this point resumes from this checkpoint

    def stage_dataset(self, stage: StageConfig) -> Dataset:
        return self.datasets[stage_data_name(stage)]

    def _stage_banks(self, stage):
        """The bank provider of the stage's dataset (row i of its banks = that dataset's sample i)."""
        return None if self.banks is None else self.banks.get(stage_data_name(stage))

    def _build_banks(self, stage):
        """Build (or load) the stage's feature banks with the RNG set aside: whether a bank is
        built, resumed from its parts or reused must not change the training that follows."""
        banks = self._stage_banks(stage)
        if banks is None:
            return
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        for name in stage_banks(stage):
            with torch.random.fork_rng(devices=cuda):
                banks.get(name)

    def _say(self, msg):
        if self.acc.is_main_process and not self.quiet:
            print(msg, flush=True)


