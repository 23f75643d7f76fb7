"""Loss curves of run folders (docs/design.md §9): one panel per stage, every training loss term as
a line and every validation loss as a dashed line with markers, over the stage's optimiser steps.
``eim runs show RUN --plot OUT.html`` draws one run; the research harness's study reports draw a
variant's seeds together (seed 0 solid, the others faded). matplotlib is imported only here.
"""

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence, Union

from eim.io import atomic_write
from eim.training.progress import read_metrics
from eim.training.stage import stage_number

PathLike = Union[str, Path]


def _figure(run_dirs: Sequence[PathLike]) -> Any:
    import matplotlib  # heavy: only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display needed

    names = sorted({p.name.removesuffix(".partial") for rd in run_dirs for p in Path(rd).glob("stage-*") if p.is_dir()},
                   key=lambda n: stage_number(Path(n)))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.2 * max(len(names), 1), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for si, rd in enumerate(run_dirs):
            d = Path(rd) / name
            rows = read_metrics(d if d.exists() else d.with_name(name + ".partial"))
            alpha, tag = (1.0 if si == 0 else 0.45), (f" (seed {si})" if len(run_dirs) > 1 else "")
            train = [r for r in rows if "loss" in r]
            for key in sorted({k for r in train for k in r if k.startswith("loss_")}):
                pts = [(r["step"], r[key]) for r in train if key in r]
                ax.plot(*zip(*pts), label=key + tag, alpha=alpha)
            val = [r for r in rows if any(k.startswith("val_loss") for k in r)]
            for key in sorted({k for r in val for k in r if k.startswith("val_loss")}):
                pts = [(r["step"], r[key]) for r in val if key in r]
                ax.plot(*zip(*pts), "--o", markersize=3, label=key + tag, alpha=alpha)
        ax.set_title(name.replace("stage-", "stage "))
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, plt


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
            "margin:2em}pre{font-size:0.85em}</style></head><body>"
            f"<h1>{esc(str(run_dir))}</h1><pre>{esc(table)}</pre>"
            f"<img src='{_png_uri([run_dir])}' alt='loss curves of every stage'></body></html>\n")
    atomic_write(path, lambda f: f.write(page.encode()))
