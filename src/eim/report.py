"""The demo's ``report.html``: metric table with deltas, loss curves, timings, parameter counts
(paper Table 2 layout) and a caption gallery. Opens offline: plots are PNG files beside it,
gallery images are embedded as data URIs.
"""

import base64
import html
import io
import json
from pathlib import Path

from eim.demo import LABELS, METRICS

GALLERY = 8


def _pct(x):
    return "n/a" if x is None else f"{x * 100:.2f}"


def _loss_plot(run_dirs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage_dirs = sorted(Path(run_dirs[0]).glob("stage-*"))
    fig, axes = plt.subplots(1, len(stage_dirs), figsize=(4.2 * len(stage_dirs), 3.2), squeeze=False)
    for ax, sd in zip(axes[0], stage_dirs):
        for si, rd in enumerate(run_dirs):
            f = Path(rd) / sd.name / "metrics.jsonl"
            if not f.exists():
                continue
            rows = [json.loads(line) for line in f.read_text().splitlines()]
            for key in sorted(k for k in rows[0] if k.startswith("loss_")):
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=f"{key} (seed {si})",
                        alpha=1.0 if si == 0 else 0.45)
        ax.set_title(sd.name.replace("stage-", "stage "))
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def loss_curves_html(results, variants, seeds, plots, stem, labels=None):
    """A "Loss curves" section: one PNG per variant (all seeds' stages) in ``plots/{stem}_{v}.png``."""
    labels = LABELS if labels is None else labels
    h = ["<h2>Loss curves</h2>"]
    for v in variants:
        png = plots / f"{stem}_{v}.png"
        _loss_plot([results[(v, s)]["run_dir"] for s in range(seeds)], png)
        h.append(f"<h3>{html.escape(labels.get(v, v))}</h3><img src='plots/{png.name}' alt='loss curves {v}'>")
    return h


def _img_uri(path):
    from PIL import Image

    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((128, 128), Image.NEAREST).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(out, summary, results, test_ds):
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    variants = list(summary["variants"])
    seeds = summary["seeds"]
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>EIM demo report</title><style>",
         "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222}",
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}",
         "th:first-child,td:first-child{text-align:left}.pos{color:#17702a}.neg{color:#b3261e}",
         ".g{display:grid;grid-template-columns:repeat(2,1fr);gap:12px}.card{border:1px solid #ddd;padding:8px;display:flex;gap:10px}",
         ".card img{image-rendering:pixelated;width:128px;height:128px}.small{font-size:0.85em;color:#555}</style></head><body>",
         "<h1>EIM demo: ClipCap baseline vs ClipCap + EIM</h1>",
         f"<p>Preset <b>{html.escape(summary['preset'])}</b>, {seeds} seed(s), total wall-clock "
         f"{summary.get('seconds_total', 0):.0f} s. Every variant gets the same number of optimiser steps on its final "
         f"objective ({summary['schedule']['steps']}); EIM's extra stages are listed as extra cost.</p>"]
    if summary.get("verdict"):
        h.append(f"<p><b>Result:</b> {html.escape(summary['verdict'])}.</p>")

    # metric table
    h.append("<h2>COCO caption metrics (test split, %)</h2><table><tr><th>model</th>"
             + "".join(f"<th>{m}</th>" for m in METRICS) + "</tr>")
    for v in variants:
        d = summary["variants"][v]
        cells = []
        for m in METRICS:
            mm = d["metrics"][m]
            if mm["mean"] is None:
                reason = d.get("unavailable", {}).get(m, "not computed")
                cells.append(f"<td title='{html.escape(reason)}'>n/a</td>")
                continue
            txt = _pct(mm["mean"]) + (f" ± {mm['std'] * 100:.2f}" if seeds > 1 else "")
            delta = d.get("delta_vs_baseline", {}).get(m)
            if v != "clipcap" and delta is not None:
                txt += f"<br><span class='{'pos' if delta > 0 else 'neg'}'>{delta * 100:+.2f}</span>"
            cells.append(f"<td>{txt}</td>")
        h.append(f"<tr><td>{html.escape(d['label'])}</td>{''.join(cells)}</tr>")
    h.append("</table>")
    if any(summary["variants"][v].get("unavailable") for v in variants):
        reasons = {k: r for v in variants for k, r in summary["variants"][v].get("unavailable", {}).items()}
        h.append("<p class='small'>" + "; ".join(f"{k}: {html.escape(r)}" for k, r in reasons.items()) + "</p>")

    # timings
    h.append("<h2>Wall-clock</h2><table><tr><th>model</th><th>stages (steps, seconds)</th><th>train s</th>"
             "<th>generation s</th></tr>")
    for v in variants:
        d = summary["variants"][v]
        st = "<br>".join(f"{s['name']} [{'+'.join(s['losses'])}]: {s['steps']} steps, {s['seconds_mean']:.1f} s"
                         for s in d["stages"])
        h.append(f"<tr><td>{html.escape(d['label'])}</td><td style='text-align:left'>{st}</td>"
                 f"<td>{d['train_seconds_mean']:.1f}</td><td>{d['eval_seconds_mean']:.1f}</td></tr>")
    h.append("</table><p class='small'>Pipeline: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings"].items())
             + "</p>")

    # parameters (Table 2 layout)
    h.append("<h2>Parameters per segment (demo sizes)</h2><table><tr><th>model</th><th>CLIP tower</th>"
             "<th>CLIP output layer</th><th>CLIP tuning</th><th>ST</th><th>LLM</th><th>total</th><th>trainable</th></tr>")
    for v in variants:
        p = summary["variants"][v]["params"]
        vp = p["segments"]["vision"]["parts"]
        h.append(f"<tr><td>{html.escape(LABELS.get(v, v))}</td><td>{vp['tower']:,}</td><td>{vp['output_layer']:,}</td>"
                 f"<td>{vp['tuning']:,}</td><td>{p['segments']['projector']['total']:,}</td>"
                 f"<td>{p['segments']['lm']['total']:,}</td><td>{p['total']:,}</td><td>{p['trainable']:,}</td></tr>")
    h.append("</table>")

    h += loss_curves_html(results, variants, seeds, plots, "loss")

    # gallery
    h.append("<h2>Gallery (test images, seed 0)</h2><div class='g'>")
    preds = {}
    for v in variants:
        res = json.loads((Path(results[(v, 0)]["run_dir"]) / "eval-coco" / "results.json").read_text())
        preds[v] = {str(r["image_id"]): r["caption"] for r in res}
    for i in range(min(GALLERY, len(test_ds))):
        s = test_ds[i]
        lines = "".join(f"<div><b>{html.escape(LABELS.get(v, v))}:</b> {html.escape(preds[v].get(str(s.image_id), ''))}</div>"
                        for v in variants)
        refs = "".join(f"<li>{html.escape(r)}</li>" for r in s.meta.get("references", []))
        h.append(f"<div class='card'><img src='{_img_uri(s.image)}' alt='test image {s.image_id}'><div>{lines}"
                 f"<div class='small'>references:<ul>{refs}</ul></div></div></div>")
    h.append("</div></body></html>")
    (out / "report.html").write_text("\n".join(h))
