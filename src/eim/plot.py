"""Loss curves of run folders (docs/design.md §9): one panel per stage, every training loss term as
a line and every validation loss as a dashed line with markers, over the stage's optimiser steps.
``eim runs show RUN --plot OUT.html`` draws one run; the research harness's study reports draw a
variant's seeds together (seed 0 solid, the others faded). Three panels a row (a page 1,366 px wide
shows them whole), each legend below its panel (never over a curve), a marker on every point of a
short series (a stage logged once is a dot, not an empty panel). matplotlib is imported only here.
"""

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Sequence, Union

from eim.io import atomic_write
from eim.training.progress import read_metrics
from eim.training.run_dir import PARTIAL
from eim.training.stage import stage_number

PathLike = Union[str, Path]
PER_ROW = 3  # panels a row
SHORT = 12  # a series this short or shorter gets a marker on every point


def _figure(run_dirs: Sequence[PathLike]) -> Any:
    import matplotlib  # heavy: only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display needed

    names = sorted({p.name.removesuffix(PARTIAL) for rd in run_dirs for p in Path(rd).glob("stage-*") if p.is_dir()},
                   key=lambda n: stage_number(Path(n)))
    series = {name: _series(run_dirs, name) for name in names}
    n = max(len(names), 1)
    cols, rows = min(n, PER_ROW), math.ceil(n / PER_ROW)
    legend_rows = max([math.ceil(len(s) / 2) for s in series.values()] + [0])
    height = 3.0 + 0.19 * legend_rows  # room for the legend below the axes
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(names):] if names else []:
        ax.set_visible(False)
    for ax, name in zip(flat, names):
        for label, pts, style, alpha in series[name]:
            marker = "o" if style == "--" or len(pts) <= SHORT else ""  # validation: always
            ax.plot(*zip(*pts), style + marker, markersize=3, label=label, alpha=alpha)
        ax.set_title(name.replace("stage-", "stage "))
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        if series[name]:
            ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    return fig, plt


def _series(run_dirs: Sequence[PathLike], name: str) -> list:
    """One stage's lines over the runs: (label, [(step, value)], style, alpha) for each training
    loss term and each validation loss."""
    out = []
    for si, rd in enumerate(run_dirs):
        d = Path(rd) / name
        rows = read_metrics(d if d.exists() else d.with_name(name + PARTIAL))
        alpha, tag = (1.0 if si == 0 else 0.45), (f" (seed {si})" if len(run_dirs) > 1 else "")
        train = [r for r in rows if "loss" in r]
        for key in sorted({k for r in train for k in r if k.startswith("loss_")}):
            out.append((key + tag, [(r["step"], r[key]) for r in train if key in r], "-", alpha))
        val = [r for r in rows if any(k.startswith("val_loss") for k in r)]
        for key in sorted({k for r in val for k in r if k.startswith("val_loss")}):
            out.append((key + tag, [(r["step"], r[key]) for r in val if key in r], "--", alpha))
    return out


def loss_plot(run_dirs: Sequence[PathLike], path: PathLike) -> None:
    """The stages' loss curves of ``run_dirs`` (one run, or the seeds of one variant) as a PNG."""
    fig, plt = _figure(run_dirs)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _png_uri(run_dirs: Sequence[PathLike]) -> str:
    fig, plt = _figure(run_dirs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def run_page(run_dir: PathLike, table: str, path: PathLike) -> None:
    """One self-contained HTML page: the run's table (``table``, plain text) above its loss curves
    (embedded: the page opens offline, alone). Written whole, never half."""
    esc = html.escape
    page = ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{esc(Path(run_dir).name)}: loss curves</title><style>body{{font-family:system-ui,sans-serif;"
            "margin:2em}h1{font-size:1.5em;overflow-wrap:anywhere}pre{font-size:0.85em;overflow-x:auto}"
            "img{max-width:100%;height:auto}</style></head><body>"
            f"<h1>{esc(str(run_dir))}</h1><pre>{esc(table)}</pre>"
            f"<img src='{_png_uri([run_dir])}' alt='loss curves of every stage'></body></html>\n")
    atomic_write(path, lambda f: f.write(page.encode()))
