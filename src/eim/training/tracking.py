"""What a running stage reports, and where (docs/design.md §9): throughput, the experiment trackers.

**Tokens** are defined once (:func:`batch_tokens`): a sample's text tokens plus the positions its
image takes in the LLM input, padding excluded; the benchmarks count them the same way.

**Trackers** go through accelerate's tracker interface (``train.report_to``: ``tensorboard``,
``wandb``, ``mlflow``, ... whatever accelerate supports; rank 0 only, as accelerate does). One
tracker run per ``eim train``, named ``train.run_name`` (default: the run folder's name), written
under ``RUN/tracking/``; the recipe (its non-default fields) and the data's fingerprints are its
config. Stages are one step-aligned series: a stage's steps continue the previous stage's count.
``--resume`` continues the same tracker run where the tracker allows it (wandb: the run id kept in
``RUN/tracking/run.json``; TensorBoard appends to the same folder).
"""

import json
import time
from pathlib import Path
from typing import Any, Optional

import torch

from eim.config import Recipe, recipe_delta
from eim.io import write_json
from eim.model.multimodal import MultimodalLM


def image_positions(model: MultimodalLM) -> int:
    """Positions one image takes in the LLM input: the ST's output tokens when they are spliced
    (none when they join LLaMA-Adapter's prompts)."""
    if model.inject != "splice":
        return 0
    p = model.projector
    if hasattr(p, "prefix_length"):  # ClipCap's MLP
        return p.prefix_length
    if hasattr(p, "prefix_const"):  # ClipCap's transformer mapper
        return p.prefix_const.shape[0]
    if type(p).__name__ == "PromptMLP":  # one image token
        return 1
    return model.vision.num_tokens if model.vision.cfg.features not in ("pooled", "cls") else 1  # token-wise STs


def batch_tokens(batch: dict[str, Any], positions: int) -> int:
    """A batch's tokens: text tokens plus ``positions`` per image row, padding (and padding rows) excluded."""
    rows = batch["valid"] if "valid" in batch else torch.ones_like(batch["has_image"])
    text = int(batch["text_lengths"][rows].sum())
    return text + positions * int((batch["has_image"] & rows).sum())


def batch_samples(batch: dict[str, Any]) -> int:
    return int(batch["valid"].sum()) if "valid" in batch else int(batch["input_ids"].shape[0])


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b": value}`` with scalar values (lists and None as text): what every
    tracker's config takes."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list):
        return flat({str(i): v for i, v in enumerate(d)}, prefix) if any(isinstance(v, dict) for v in d) \
            else {prefix: json.dumps(d)}
    return {prefix: d if isinstance(d, (int, float, str, bool)) else json.dumps(d)}


class Tracking:
    """The trackers of one ``eim train`` (no-op without ``train.report_to``)."""

    def __init__(self, accelerator: Any, recipe: Recipe, run_dir: Path, data_fingerprint: dict[str, Any]) -> None:
        self.acc, self.recipe, self.run_dir = accelerator, recipe, Path(run_dir)
        self.on = bool(recipe.train.report_to)
        self.fingerprint = data_fingerprint

    def start(self, resume: bool = False) -> None:
        """Open the tracker run: with ``resume``, the one the run folder recorded (where the tracker
        can continue it); otherwise a new one."""
        if not self.on:
            return
        name = self.recipe.train.run_name or self.run_dir.name
        state_file = self.run_dir / "tracking" / "run.json"
        state = json.loads(state_file.read_text()) if resume and state_file.exists() else {}
        run_id = state.get("id") or f"{name}-{int(time.time())}"
        if self.acc.is_main_process:
            (self.run_dir / "tracking").mkdir(parents=True, exist_ok=True)
            write_json({"name": name, "id": run_id}, state_file)
        config = {**flat(recipe_delta(self.recipe), "recipe"), **flat(self.fingerprint, "data")}
        self.acc.init_trackers(name, config=config, init_kwargs={
            "wandb": {"name": name, "id": run_id, "resume": "allow", "dir": str(self.run_dir / "tracking")}})

    def log(self, values: dict[str, Any], step: int) -> None:
        if self.on:
            self.acc.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        if self.on:
            self.acc.end_training()


class Throughput:
    """Samples and tokens per second of the optimiser steps since the last ``rate()``."""

    def __init__(self) -> None:
        self.t, self.samples, self.tokens = time.time(), 0, 0
        self.total_samples, self.total_tokens, self.seconds = 0, 0, 0.0

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def rate(self) -> dict[str, float]:
        now = time.time()
        dt = max(now - self.t, 1e-9)
        out = {"samples_per_s": self.samples / dt, "tokens_per_s": self.tokens / dt}
        self.total_samples, self.total_tokens = self.total_samples + self.samples, self.total_tokens + self.tokens
        self.seconds += dt
        self.t, self.samples, self.tokens = now, 0, 0
        return out

    def averages(self) -> dict[str, Optional[float]]:
        """Over the whole stage (the steps this process ran: a resumed stage counts its last part)."""
        self.rate()
        if not self.seconds:
            return {"samples_per_s": None, "tokens_per_s": None}
        return {"samples_per_s": round(self.total_samples / self.seconds, 3),
                "tokens_per_s": round(self.total_tokens / self.seconds, 3)}


def peak_memory_gb() -> Optional[float]:
    """Peak accelerator memory of this process so far (None without CUDA)."""
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 3) if torch.cuda.is_available() else None
