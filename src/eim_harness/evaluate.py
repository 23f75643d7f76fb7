"""Scoring a run on one benchmark, reusing an evaluation that is still fresh (the demo pipeline's and
the studies' one path to :func:`eim.evaluation.generate.evaluate_checkpoint`)."""

import json
from pathlib import Path
from typing import Any, Optional, Protocol

from eim.data.dataset import Dataset
from eim.evaluation.generate import evaluate_checkpoint

GENERATION_KEYS = ("num_beams", "max_new_tokens", "max_prompt_tokens")  # what makes an evaluation differ


class Benchmark(Protocol):
    """One benchmark a run is scored on: its name (``coco``, ``scienceqa``, ``mme``), the decoding
    settings for a preset, and the metrics that get paired intervals (per-item statistics kept)."""

    name: str
    interval_metrics: dict

    def eval_kwargs(self, p: Any) -> dict[str, Any]: ...


def eval_fresh(ev: Path, run_dir: Path, settings: dict[str, Any], n: int, per_image: bool = True) -> bool:
    """Reuse an evaluation only when it scored ``n`` samples with these decoding ``settings``
    after the checkpoint was last written (and kept its per-item statistics, when asked)."""
    scores, gen = ev / "scores.json", ev / "generation.json"
    if not (scores.exists() and gen.exists()) or (per_image and not (ev / "per_image.json").exists()):
        return False
    info = json.loads(gen.read_text())
    same = info.get("samples") == n and all(info["generation"].get(k) == v for k, v in settings.items())
    weights = [f.stat().st_mtime for f in Path(run_dir).glob("stage-*/model.safetensors")]
    return same and (not weights or scores.stat().st_mtime >= max(weights))


def evaluate_benchmark(bench: Benchmark, run_dir: Path, dataset: Dataset, p: Any, split: str = "test",
                       quiet: bool = False, **kwargs: Any) -> tuple[dict, Path, Optional[float]]:
    """Score a run on ``dataset`` into ``run_dir/eval-<benchmark>[-<split>]``, reusing a fresh
    evaluation (:func:`eval_fresh`); returns (scores, evaluation folder, generation seconds)."""
    eval_kw = {**bench.eval_kwargs(p), **kwargs}
    settings = {k: eval_kw[k] for k in GENERATION_KEYS if k in eval_kw}
    ev = Path(run_dir) / (f"eval-{bench.name}" if split == "test" else f"eval-{bench.name}-{split}")
    if eval_fresh(ev, run_dir, settings, len(dataset), per_image=bool(bench.interval_metrics)):
        scores = json.loads((ev / "scores.json").read_text())
        if not quiet:
            print(f"      reusing {ev}/scores.json", flush=True)
    else:
        scores = evaluate_checkpoint(run_dir, bench.name, dataset, ev, quiet=quiet, **eval_kw)
    gen = json.loads((ev / "generation.json").read_text())
    return scores, ev, gen.get("generation_seconds")
