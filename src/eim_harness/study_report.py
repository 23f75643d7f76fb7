"""A study's ``report.html`` (docs/evidence.md): per condition a forest plot per compared metric
(each difference with its 95% interval), the metric table (mean ± std over seeds), the
comparisons, the selection record, the cost of every stage, and loss curves. Plots are PNG files
in ``plots/`` beside it. The seed count is the one run (``--seeds``), never the spec's; a one-seed
interval is marked items-only, never coloured as a difference."""

from pathlib import Path

from eim.plot import loss_plot
from eim_harness.report import CSS, ITEMS_ONLY, diff_class, esc, interval_html, items_only


def _forest(comps, metric, path, title):
    import matplotlib  # heavy: only the report draws plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display here

    from matplotlib.ticker import MaxNLocator  # with matplotlib, above

    rows = [c for c in comps if c["metric"] == metric]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.2))
    colours = {"pos": "#17702a", "neg": "#b3261e"}
    for y, c in enumerate(reversed(rows)):
        lo, hi = c["ci95"]
        colour = colours.get(diff_class(c), "#444")  # a one-seed (items-only) interval stays grey
        ax.plot([lo, hi], [y, y], color=colour, lw=2, ls=":" if items_only(c) else "-")
        ax.plot([c["diff"]], [y], "o", color=colour)
    ax.axvline(0, color="#999", lw=1, ls="--")
    # symmetric about zero, at least ±0.1 points: no run-together ticks or 1e-9 offsets on a null difference
    half = max([0.1] + [abs(x) for c in rows for x in c["ci95"]]) * 1.08
    ax.set_xlim(-half, half)
    ax.xaxis.set_major_locator(MaxNLocator(7, symmetric=True))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{c['variant']} − {c['reference']}" + (" (items only)" if items_only(c) else "")
                        for c in reversed(rows)], fontsize=8)
    ax.set_xlabel(f"difference in {metric} (points), 95% interval")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(x, sd=None):
    if x is None:
        return "n/a"
    return f"{x:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def heading(study):
    """The study's heading with the seed count as run (a smoke run of a ten-seed spec is not ten seeds)."""
    n = study["seeds"]
    return f"{study['title']}: {n} seed{'s' if n != 1 else ''}"


def _seeds_note(study):
    n, named = study["seeds"], study.get("spec_seeds")
    text = f"{n} seed{'s' if n != 1 else ''}" + (f" (the spec names {named})" if named not in (None, n) else "")
    return text + (", so every interval is over the test items only" if n == 1 else "")


def _selection_html(sel):
    """One sweep's line: each grid point's score on the selection split in points, as the tables print."""
    unit = " (points)" if sel.get("unit") == "points" else ""

    def point(p):
        return ", ".join(f"{k} = {v}" for k, v in p.items())
    tried = "; ".join(f"{point(t['point'])} → {t['value']:.2f}" for t in sel["tried"])
    return (f"<li>{esc(sel['variant'])}, {esc(sel['metric'])}{unit} on {esc(sel.get('split', 'val'))}: {esc(tried)}; "
            f"chosen <b>{esc(point(sel['chosen']))}</b></li>")


def write_study_report(out, study):
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(study['spec'])}</title>"
         f"<style>{CSS}</style></head><body><h1>{esc(heading(study))}</h1>",
         f"<p>Study <code>{esc(study['spec'])}</code>, preset <b>{esc(study['preset'])}</b>, "
         f"{esc(_seeds_note(study))}; "
         f"hyper-parameters chosen on <b>{esc(study['select_on'])}</b>, the test split read once. Differences are "
         "paired over seeds and test items with 95% intervals (t over seeds, bootstrap over items; "
         "docs/design.md §11); COCO metrics in "
         f"points. Wall-clock {study.get('seconds', 0) / 60:.1f} min.</p>"]
    for cond, c in study["conditions"].items():
        w = c["world"]
        h.append(f"<h2>Condition: {esc(cond)}</h2><p class='small'>World: {w['train']} training images, "
                 f"{w['val']} validation, {w['test']} test" + (f", encoders pretrained on {w['web']} web images"
                                                                 if w.get("web") else ", encoders pretrained on the "
                                                                 "training split") + ".</p>")
        for m in study["metrics"]:
            png = plots / f"forest_{cond}_{m}.png"
            _forest(c["comparisons"], m, png, f"{cond}: {m}")
            h.append(f"<img src='plots/{png.name}' alt='forest plot {cond} {m}'>")
        table = study["table"]
        h.append("<table><tr><th>variant</th>" + "".join(f"<th>{esc(m)}</th>" for m in table)
                 + "<th>train s</th><th class='w'>stages (steps, s)</th></tr>")
        for name, v in c["variants"].items():
            spread = study["seeds"] > 1  # one seed: no spread to show
            cells = "".join(f"<td>{_fmt(v['metrics'][m]['mean'], v['metrics'][m]['std'] if spread else None)}</td>"
                            for m in table)
            st = "<br>".join(f"<span class='nw'>{s['name']} [{'+'.join(s['losses'])}]: {s['steps']}, "
                             f"{s['seconds_mean']:.0f} s</span>" for s in v["stages"])
            h.append(f"<tr><td>{esc(v['label'])}</td>{cells}<td>{v['train_seconds_mean']:.0f}</td>"
                     f"<td class='w'>{st}</td></tr>")
        h.append("</table><h3>Comparisons</h3><table><tr><th>difference</th><th>metric</th><th>diff</th>"
                 "<th>95% interval</th><th>seeds</th><th>test items</th></tr>")
        for cmp in c["comparisons"]:
            h.append(f"<tr><td>{esc(cmp['variant'])} − {esc(cmp['reference'])}</td><td>{esc(cmp['metric'])}</td>"
                     f"<td class='{diff_class(cmp)}'>{cmp['diff']:+.2f}</td><td>{interval_html(cmp)}</td>"
                     f"<td>{cmp['n_seeds']}</td><td>{cmp['n_images']}</td></tr>")
        h.append("</table>")
        if any(map(items_only, c["comparisons"])):
            h.append(f"<p class='small'>{ITEMS_ONLY}.</p>")
        if c["selection"]:
            h.append("<h3>Selection (validation split, seed 0)</h3><ul>")
            h += [_selection_html(sel) for sel in c["selection"]]
            h.append("</ul>")
        h.append("<h3>Loss curves (all seeds)</h3>")
        for name, v in c["variants"].items():
            png = plots / f"loss_{cond}_{name}.png"
            loss_plot(v["run_dirs"], png)
            h.append(f"<h4>{esc(v['label'])}</h4><img src='plots/{png.name}' alt='loss curves {name}'>")
    r = study["reproduce"]
    h.append(f"<h2>Reproduce</h2><pre>{esc(str(r.get('command') or ''))}</pre><p class='small'>"
             + esc(", ".join(f"{k} {v}" for k, v in r["versions"].items())) + "</p></body></html>")
    (out / "report.html").write_text("\n".join(h), encoding="utf-8")
