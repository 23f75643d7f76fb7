"""What a demo or study task is (:mod:`eim_harness.pipeline`, :mod:`eim_harness.study`): the
interface :mod:`eim_harness.coco`, :mod:`eim_harness.lavin` and :mod:`eim_harness.llava`
implement, with the defaults a task may keep (docs/harness.md).

A task says what differs between comparisons: its presets and study schedules, the recipes it
compares (``variants``, the ``baseline`` and the ``treatment``), its data and encoders, how a run
is scored (``evaluate``) and which metrics get paired intervals, and its report.
"""

from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from eim.config import Recipe
from eim.data.dataset import Dataset
from eim_harness.evaluate import evaluate_benchmark
from eim_harness.worlds import World, world_encoders


class Task(Protocol):
    """A comparison the harness runs: ``eim demo --task NAME`` and the studies whose spec names it."""

    name: str
    presets: dict[str, Any]  # preset name -> its sizes and schedule (a dataclass of the task's own)
    variants: tuple[str, ...]  # the recipes ``eim demo`` compares
    labels: dict[str, str]  # recipe -> its label in reports
    metrics: tuple[str, ...]  # what the summary lists for each variant
    baseline: str
    treatment: str
    key_metric: str  # the headline metric, its unit and the factor that turns scores into it
    key_unit: str
    key_scale: float
    interval_metrics: dict[str, tuple[Callable, float]]  # metric -> (per-item statistic, scale)
    compared: tuple[str, ...]  # the metrics the demo summary compares with intervals
    data_text: str  # what the pipeline prints about the data and the test items
    test_text: str
    metric_sources: Optional[dict[str, str]] = None  # metric -> benchmark folder, for a task scored on several

    @property
    def schedules(self) -> dict[str, Any]:
        """The presets a study may run (default: the demo's)."""
        return self.presets

    def world(self, p: Any) -> tuple[int, int, int]:
        """(training images, test images, image side) of the demo's shapes world."""

    def lm_text(self, p: Any, name: str) -> str:
        """The LLM, in words, for the pipeline's progress line."""

    def encoders(self, out: Path, data: Path, p: Any, name: str, quiet: bool) -> dict[str, Any]:
        """The demo's pretrained CLIP and LLM: ``{"clip": Path, "lm": Path, "reused": bool}``."""

    def datasets(self, data: Path, p: Any, enc: dict[str, Any], quiet: bool) -> tuple[Any, Any, Any]:
        """(training data, test data, the preset fitted to them): a dataset or ``{name: dataset}`` each."""

    def recipe(self, variant: str, p: Any, clip_dir: Path, lm_dir: Path, seed: int,
               extra: Optional[dict[str, Any]] = None) -> Recipe:
        """The shipped recipe ``variant`` pointed at the encoders with the preset's schedule."""

    def run_name(self, variant: str, seed: int) -> str:
        """The demo's run folder of (variant, seed)."""

    def eval_kwargs(self, p: Any) -> dict[str, Any]:
        """Decoding settings for :func:`eim.evaluation.generate.evaluate_checkpoint`."""

    def metric_values(self, scores: dict[str, Any]) -> dict[str, Any]:
        """``{metric: value}`` of the task's metrics from one evaluation's scores."""

    def extra_summary(self, scores_per_seed: list[dict[str, Any]]) -> dict[str, Any]:
        """Task-specific entries of a variant's summary."""

    def data_summary(self, train_ds: Any, test_ds: Any) -> dict[str, Any]:
        """What the summary records about the data."""

    def report(self, out: Path, summary: dict[str, Any], results: dict, test_ds: Any) -> None:
        """Write ``out/report.html``."""

    def study_datasets(self, data: Path) -> tuple[Any, dict[str, Any]]:
        """A study's training data and its ``{"val": ..., "test": ...}`` splits."""

    def study_encoders(self, cache: Path, data: Path, w: World, preset: str, p: Any, quiet: bool) -> dict[str, Any]:
        """A study's encoders for condition ``w`` (default: the world's tiny or smol pair)."""
        return world_encoders(cache, data, w, "smol" if preset == "smol" else "tiny", p.encoders or None, quiet)

    def study_preset(self, p: Any, enc: dict[str, Any], train_ds: Any, splits: dict[str, Any]) -> Any:
        """The schedule fitted to a study's data (default: as it is)."""
        return p

    def evaluate(self, run_dir: Path, dataset: Dataset, p: Any, split: str = "test", quiet: bool = False,
                 **kwargs: Any) -> tuple[dict, Any, Optional[float]]:
        """(scores, evaluation folder, generation seconds) of a run on ``dataset``; a task scored on
        several benchmarks returns ``{benchmark: folder}`` and sets :attr:`metric_sources`."""
        return evaluate_benchmark(self, run_dir, dataset, p, split=split, quiet=quiet, **kwargs)
