"""What one running stage shows and records (docs/design.md §9): the progress bar, the rows of its
``metrics.jsonl`` and the values its trackers get.

Every ``train.log_every`` optimiser steps (and at the stage's last) a row holds the stage's loss
terms and their weights, the learning rate of each parameter group, the gradient norm when it is
computed, samples/s and tokens/s since the previous row (:func:`eim.training.tracking.batch_tokens`),
peak accelerator memory where there is one, and the step in the whole run (``global_step``: a
stage's steps continue the previous stage's count). Validation rows (``train.eval_every``) carry
``val_loss_*``. A loss term with no items in a step (``loss_IE`` on a text-only batch) is absent
from that step's row and tracker values, never 0. The bar (:func:`eim.progress_bar.progress_bar`: a
line every few seconds where output is not a terminal) shows the stage, each loss term's latest
value, samples/s and the time left for the stage and for the whole run (the steps still to come, at
this stage's pace).
"""

import json
import time
from pathlib import Path
from typing import Any, Optional

from eim.io import append_line
from eim.progress_bar import progress_bar
from eim.training.stage import StageRun
from eim.training.tracking import Throughput, Tracking, peak_memory_gb


def mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def due(step: int, total: int, every: int) -> bool:
    """Whether optimiser step ``step`` (counted from 1) of ``total`` gets a row: every ``every`` steps and
    the stage's last."""
    return step % every == 0 or step == total


class StageProgress:
    """The bar, metrics rows and tracker values of stage ``run.k``; ``offset``: optimiser steps of
    the stages before it, ``later``: of the stages after it; ``main``: this process writes."""

    def __init__(self, run: StageRun, log_every: int, tracking: Tracking, offset: int, later: int,
                 main: bool = True, quiet: bool = False) -> None:
        self.run, self.log_every, self.tracking = run, log_every, tracking
        self.offset, self.later, self.main = offset, later, main
        self.throughput, self.rate = Throughput(), None
        self.start_step, self.t0 = run.step, time.time()
        self.bar = progress_bar(total=run.total, initial=run.step, desc=f"stage {run.k} {run.stage.name}",
                                disable=quiet or not main)
        self.terms: dict[str, str] = {}  # each loss term's latest value, for the bar

    def global_step(self) -> int:
        return self.offset + self.run.step

    def step(self, last: dict[str, Any]) -> None:
        """After an optimiser step: advance the bar, write a row when one is due."""
        run = self.run
        self.throughput.add(last.pop("samples", 0), last.pop("tokens", 0))
        done = run.step - self.start_step
        pace = (time.time() - self.t0) / max(done, 1)  # seconds per step
        self.bar.update(1)
        # a term with no items this step (loss_IE on a text-only batch) is absent from ``last``: the
        # bar keeps its latest value, the row and the trackers leave it out
        self.terms.update({k[len("loss_"):]: f"{v:.3f}" for k, v in last.items() if k.startswith("loss_")})
        eta = mmss(pace * (run.total - run.step + self.later))
        if due(run.step, run.total, self.log_every):
            row = {"step": run.step, "global_step": self.global_step(), **last,
                   **{f"weight_{n}": w for n, w in zip(run.names, run.weights)},
                   "lr": run.sched.get_last_lr()[0],
                   **{f"lr_group{i}": lr for i, lr in enumerate(run.sched.get_last_lr())},
                   **self.throughput.rate(), "time": time.time() - run.t0}
            memory = peak_memory_gb()
            if memory is not None:
                row["peak_memory_gb"] = memory
            self.write(row)
            self.rate = f"{row['samples_per_s']:.1f}"
        if not self.bar.disable:
            self.bar.set_postfix(**self.terms, **({"samples_s": self.rate} if self.rate else {}), ETA_run=eta,
                                 refresh=False)

    def validation(self, values: dict[str, float]) -> None:
        """A validation row: ``val_*`` at this step (none when there is nothing to validate)."""
        if not values:
            return
        self.write({"step": self.run.step, "global_step": self.global_step(),
                    **{f"val_{k}": v for k, v in values.items()}})

    def write(self, row: dict[str, Any]) -> None:
        if self.main:
            append_line(self.run.dir / "metrics.jsonl", json.dumps(row))
        self.tracking.log({k: v for k, v in row.items() if k not in ("step", "global_step", "time")}, self.global_step())

    def close(self) -> dict[str, Optional[float]]:
        """The stage's average samples/s and tokens/s (for ``stage.json``)."""
        self.bar.close()
        return self.throughput.averages()


def read_metrics(stage_dir: Path) -> list[dict[str, Any]]:
    """The rows of a stage's ``metrics.jsonl``; a step logged twice (a resumed stage) keeps its later row."""
    f = Path(stage_dir) / "metrics.jsonl"
    if not f.exists():
        return []
    rows = {}
    for line in f.read_text().splitlines():
        r = json.loads(line)
        rows[(r["step"], "loss" not in r)] = r  # a training row, or a validation row
    return [rows[k] for k in sorted(rows)]
