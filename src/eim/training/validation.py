"""Validation during training (docs/design.md §9): held-out losses every ``train.eval_every`` steps,
the task metric at each stage's end (``train.eval_generate``).

The held-out data of a stage is the validation split of its dataset (COCO's and ScienceQA's ``val``)
or what ``--val-data [NAME=]PATH`` gives (required where the file is the split: LLaVA, Alpaca,
MME). At most ``train.eval_samples`` samples, the first ones, in fixed batches split across the
processes: the same numbers every time. ``loss_base`` always; the contrastive terms too with
``train.eval_banks`` (validation banks, built and fingerprinted like the training banks, in
``RUN/banks/val/``). It runs under ``no_grad`` with the random state set aside and the model in
eval mode, and puts everything back: a run with and without validation trains to the same weights.
Parameters must be whole on every process (one process, DDP, DeepSpeed ZeRO-2); under ZeRO-3 and
FSDP validation is refused: score the saved stages with ``eim eval``.
"""

from pathlib import Path
from typing import Any, Optional

import torch
from accelerate.utils import DistributedType

from eim.banks import BankProvider, bank_dir
from eim.config import StageConfig
from eim.data.dataset import Dataset
from eim.data.loader import load_dataset
from eim.distributed import all_reduce_sum, shard_range
from eim.evaluation.predictions import generate_predictions, write_predictions
from eim.errors import ConfigError, DataError
from eim.losses import LOSS_BANK, build_losses
from eim.model.splice import TextEncoder
from eim.training.collate import Collator, to_device
from eim.training.progress import due
from eim.training.stage import StageStep, collate_mode, stage_data_name

SCORED = ("coco", "scienceqa", "mme")  # the data formats train.eval_generate scores


def default_validation(dataset: Dataset, mode: str = "train") -> Optional[Dataset]:
    """The validation split of a dataset whose files hold one (COCO, ScienceQA), else None."""
    if dataset.format == "coco":
        return load_dataset(dataset.path, "coco", split="val", mode=mode)
    if dataset.format == "scienceqa":
        return load_dataset(dataset.root, "scienceqa", split="val", mode=mode)
    return None


class Validation:
    """Held-out losses of the stages' datasets (``{name: dataset}``, filled in from the training
    datasets' own validation splits) with the model of ``trainer``."""

    def __init__(self, trainer: Any, given: dict[str, Dataset]) -> None:
        self.trainer, self.recipe = trainer, trainer.recipe
        r = self.recipe
        self.on = r.train.eval_every is not None or r.train.eval_generate
        self.datasets: dict[str, Dataset] = dict(given)
        self.banks: dict[str, BankProvider] = {}
        if not self.on:
            return
        if trainer.acc.distributed_type == DistributedType.FSDP or _zero3(trainer.acc):
            raise ConfigError("train.eval_every / eval_generate run the model with whole parameters on every process; "
                              "under FSDP and DeepSpeed ZeRO-3 they are not: drop them and score the saved stages "
                              "with `eim eval`")
        for name, ds in trainer.datasets.items():
            if name not in self.datasets:
                val = default_validation(ds)
                if val is None:
                    raise DataError(f"train.eval_every needs held-out data for the dataset {name!r} ({ds.format}: its "
                                    "file is the split)", remedy=f"pass --val-data {name}=PATH (a plain --val-data PATH "
                                    "for the main dataset), or drop train.eval_every")
                self.datasets[name] = val
        if r.train.eval_generate:
            for name, ds in self.datasets.items():
                if ds.format not in SCORED:
                    raise ConfigError(f"train.eval_generate scores COCO captions, ScienceQA or MME answers; {name!r} is "
                                      f"{ds.format} data: drop train.eval_generate (score the saved stages "
                                      "with `eim eval`)")

    def due(self, step: int, total: int) -> bool:
        every = self.recipe.train.eval_every
        return every is not None and due(step, total, every)

    def _banks(self, name: str) -> Optional[BankProvider]:
        if not self.recipe.train.eval_banks:
            return None
        if name not in self.banks:
            t = self.trainer
            root = bank_dir(t.run_dir, None, name) / "val"  # RUN/banks/val, RUN/banks/<name>/val
            self.banks[name] = BankProvider(self.recipe, self._subset(name), t.run_dir, banks_dir=root, model=t.model,
                                            tokenizer=t.tok, quiet=t.quiet, device=t.acc.device)
        return self.banks[name]

    def _subset(self, name: str) -> "Head":
        return Head(self.datasets[name], self.recipe.train.eval_samples)

    @torch.no_grad()
    def losses(self, stage: StageConfig, k: int) -> dict[str, float]:
        """The stage's held-out loss terms (global means): loss_base, and the contrastive ones with
        ``train.eval_banks``."""
        t, r = self.trainer, self.recipe
        name = stage_data_name(stage)
        data, banks = self._subset(name), self._banks(name)
        kept = {n: w for n, w in stage.losses.items() if n == "base" or banks is not None}
        if not kept:
            return {}
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda):
            if banks is not None:  # built by every process together, before any forward
                for bank in sorted({LOSS_BANK[n] for n in kept if n in LOSS_BANK}):
                    banks.get(bank)
            losses = build_losses(StageConfig(stage.name, kept, stage.trainable, steps=1), r, banks, t.model)
            for m, _ in losses.values():
                m.to(t.acc.device)
            step = StageStep(t.model, losses, need_cls="ie" in kept)
            was = {m: m.training for m in t.model.modules()}
            t.model.eval()
            collate = Collator(TextEncoder.for_recipe(t.tok, r, stage, image_positions=t.positions), t.proc,
                               mode=collate_mode(r, stage),
                               bank_text="lm" in kept, image_aspect_ratio=r.data.image_aspect_ratio)
            batch_size = r.stage_batch(stage)[0]
            sums = torch.zeros(2 * len(kept), dtype=torch.float64, device=t.acc.device)
            G = batch_size * t.world
            for start in range(0, len(data), G):
                off, cnt = shard_range(min(G, len(data) - start), t.world, t.rank)
                if not cnt:
                    continue
                batch = collate([data[start + off + j] for j in range(cnt)])
                batch = to_device(batch, t.acc.device)
                with t.acc.autocast():
                    terms = step(batch)
                for i, n in enumerate(kept):
                    c = losses[n][0].count(batch)
                    sums[2 * i] += float(terms[f"loss_{n}"]) * c
                    sums[2 * i + 1] += c
            for m, flag in was.items():
                m.training = flag
        sums = all_reduce_sum(sums)
        # a term with no items in the held-out data (loss_IE on text-only rows) is absent, not 0
        return {f"loss_{n}": float(sums[2 * i] / sums[2 * i + 1]) for i, n in enumerate(kept) if sums[2 * i + 1] > 0}

    def generate(self, stage: StageConfig, out: Path) -> dict[str, float]:
        """The task metric on the stage's held-out samples (rank 0 generates and scores; the others
        wait): COCO's BLEU, ROUGE-L and CIDEr (no METEOR or SPICE: their Java start-up outweighs a
        validation), ScienceQA's accuracy, MME's accuracy and accuracy+ (whole images: an even number
        of questions). The predictions go to ``out`` in the benchmark's file."""
        t, r = self.trainer, self.recipe
        ds = self.datasets[stage_data_name(stage)]
        if ds.format == "coco" and ds.mode != "eval":  # one sample per image, with its references
            ds = load_dataset(ds.path, "coco", split=ds.split, mode="eval")
        n = r.train.eval_samples
        data = Head(ds, max(n - n % 2, 2) if ds.format == "mme" else n)  # MME scores an image's two questions
        scores: dict[str, float] = {}
        if t.acc.is_main_process:
            cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=cuda):
                was = {m: m.training for m in t.model.modules()}
                t.model.eval()
                with t.acc.autocast():
                    preds = generate_predictions(t.model, t.tok, t.proc, r, data, batch_size=r.generation.batch_size,
                                                 num_beams=r.generation.num_beams,
                                                 max_new_tokens=r.generation.max_new_tokens,
                                                 stop_text=r.generation.stop_text, quiet=True)
                for m, flag in was.items():
                    m.training = flag
            out.mkdir(parents=True, exist_ok=True)
            write_predictions(ds.format, list(data), preds, out)
            scores = score_samples(ds.format, list(data), preds)
        t.acc.wait_for_everyone()
        return scores


def score_samples(benchmark: str, samples: list, predictions: list[str]) -> dict[str, float]:
    """The headline metrics of predictions for in-memory samples (the scorers behind ``eim score``):
    COCO's BLEU-4, ROUGE-L, CIDEr (fractions, as pycocoevalcap gives them), ScienceQA's and MME's
    accuracies (%)."""
    if benchmark == "coco":
        from eim.evaluation.coco import score_captions  # pycocoevalcap: only when COCO is scored

        gts = {s.image_id: s.meta["references"] for s in samples}
        res = {s.image_id: p for s, p in zip(samples, predictions)}
        raw = score_captions(gts, res, spice=False, meteor=False)
        return {k: v for k, v in raw.items() if k in ("Bleu_4", "ROUGE_L", "CIDEr") and v is not None}
    if benchmark == "mme":
        from eim.evaluation.mme import flat_scores, score_mme  # only when MME is scored

        rows: dict[str, list] = {}
        for s, p in zip(samples, predictions):
            m = s.meta
            rows.setdefault(m["subtask"], []).append((m["image_name"], m["question"], m["answer"], p))
        flat = flat_scores(score_mme(rows))
        return {"mme_acc": flat["mme_acc"], "mme_acc_plus": flat["mme_acc_plus"]}
    from eim.evaluation.scienceqa import extract_answer  # only when ScienceQA is scored

    right = sum(extract_answer(p) == s.meta["answer"] for s, p in zip(samples, predictions))
    return {"accuracy": 100.0 * right / max(len(samples), 1)}


def _zero3(acc: Any) -> bool:
    plugin = acc.state.deepspeed_plugin
    return plugin is not None and plugin.deepspeed_config.get("zero_optimization", {}).get("stage") == 3


class Head:
    """The first ``n`` samples of a dataset (sample i keeps index i: row i of its validation banks)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, min(n, len(dataset))
        self.format, self.split, self.files = dataset.format, dataset.split, list(dataset.files)
        self.mode = getattr(dataset, "mode", "train")
        for k in ("path", "root", "parts"):
            if hasattr(dataset, k):
                setattr(self, k, getattr(dataset, k))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for the {self.n} validation samples")
        return self.dataset[i % self.n]

    def __iter__(self):
        return (self[i] for i in range(self.n))
