"""The demos' ``report.html`` (docs/harness.md): metric tables with deltas, wall-clock, parameters
per segment (paper Table 2 layout), loss curves, and examples. Opens offline: plots are PNG files
in ``plots/`` beside it, images are embedded as data URIs. Labels and metric names come from the
summary (:func:`eim_harness.pipeline.build_summary`), so this module knows no task.
"""

import base64
import html
import io
import json
from pathlib import Path

from PIL import Image

from eim.plot import loss_plot

GALLERY = 8  # images in the COCO gallery
EXAMPLES = 8  # questions in the ScienceQA / MME examples
CSS = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}.pos{color:#17702a}.neg{color:#b3261e}"
       ".g{display:grid;grid-template-columns:repeat(2,1fr);gap:12px}"
       ".card{border:1px solid #ddd;padding:8px;display:flex;gap:10px;margin:8px 0}"
       ".card img{image-rendering:pixelated;width:128px;height:128px}.noimg{width:96px;height:96px;background:#eee;"
       "display:flex;align-items:center;justify-content:center;font-size:0.8em;color:#777}"
       ".small{font-size:0.85em;color:#555}pre{white-space:pre-wrap;margin:0}img{max-width:100%;height:auto}"
       "td:not(:first-child):not(.w){white-space:nowrap}th.w,td.w{text-align:left}.io{font-style:italic;color:#6b5a00}"
       ".nw{white-space:nowrap}")
esc = html.escape


def _page(title, heading):
    return [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>", f"<h1>{esc(heading)}</h1>"]


def _label(summary, v):
    return summary["variants"][v]["label"]


ITEMS_ONLY = ("<i>items only</i>: one seed, so the interval counts the test items and not training noise; it is "
              "not coloured as a difference (three seeds or more measure both)")


def items_only(c):
    """A one-seed comparison: its interval is over the test items alone (df = ∞), blind to training noise."""
    return c["n_seeds"] < 2


def diff_class(c):
    """The CSS class of a comparison's difference: ``pos`` / ``neg`` only where an interval over seeds
    and items clears zero; a one-seed (items-only) interval is never coloured."""
    lo, hi = c["ci95"]
    return "" if items_only(c) else "pos" if lo > 0 else "neg" if hi < 0 else ""


def interval_html(c):
    lo, hi = c["ci95"]
    return f"[{lo:+.2f}, {hi:+.2f}]" + (" <span class='io'>items only</span>" if items_only(c) else "")


def comparisons_html(summary):
    """The paired differences to the baseline with their 95% intervals (``summary["comparisons"]``)."""
    comps = summary.get("comparisons") or []
    if not comps:
        return []
    h = ["<h2>Differences to the baseline (95% interval)</h2><table><tr><th>model</th><th>metric</th>"
         "<th>difference</th><th>95% interval</th><th>seeds</th><th>test items</th></tr>"]
    for c in comps:
        h.append(f"<tr><td>{esc(_label(summary, c['variant']))} − {esc(_label(summary, c['reference']))}</td>"
                 f"<td>{esc(c['metric'])}</td><td class='{diff_class(c)}'>{c['diff']:+.2f}</td>"
                 f"<td>{interval_html(c)}</td>"
                 f"<td>{c['n_seeds']}</td><td>{c['n_images']}</td></tr>")
    h.append("</table><p class='small'>Paired over seeds and test items: difference ± t · standard error, "
             f"the error from the seeds' spread and a bootstrap of the items ({comps[0]['n_boot']} resamples; "
             "docs/design.md §11). Scores in points: COCO metrics x100, accuracies in percent."
             + (f" {ITEMS_ONLY}." if any(map(items_only, comps)) else "") + "</p>")
    return h


def _wallclock(summary):
    """Stages (steps, seconds, final losses), training and evaluation seconds per variant."""
    h = ["<h2>Wall-clock</h2><table><tr><th>model</th><th class='w'>stages (steps, seconds, final losses)</th>"
         "<th>train s</th><th>eval s</th></tr>"]
    for d in summary["variants"].values():
        st = "<br>".join(f"{s['name']} [{'+'.join(s['losses'])}]: {s['steps']} steps, {s['seconds_mean']:.1f} s"
                         + "".join(f", {k} {x:.3f}" for k, x in s["final"].items() if k.startswith("loss_"))
                         for s in d["stages"])
        h.append(f"<tr><td>{esc(d['label'])}</td><td class='w'>{st}</td>"
                 f"<td>{d['train_seconds_mean']:.1f}</td><td>{d['eval_seconds_mean']:.1f}</td></tr>")
    h.append("</table><p class='small'>Pipeline: " + ", ".join(f"{k} {x:.1f} s" for k, x in summary["timings"].items())
             + ". Stage times include building the feature banks a stage needs.</p>")
    return h


def loss_curves_html(results, summary, plots, stem):
    """A "Loss curves" section: one PNG per variant (all seeds' stages) in ``plots/{stem}_{v}.png``."""
    h = ["<h2>Loss curves</h2>"]
    for v in summary["variants"]:
        png = plots / f"{stem}_{v}.png"
        loss_plot([results[(v, s)]["run_dir"] for s in range(summary["seeds"])], png)
        h.append(f"<h3>{esc(_label(summary, v))}</h3><img src='plots/{png.name}' alt='loss curves {v}'>")
    return h


def img_uri(path):
    """A small PNG of the image at ``path`` as a data URI (the report opens offline)."""
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((128, 128), Image.NEAREST).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_coco_report(out, summary, results, test_ds):
    """ClipCap demo: COCO metrics (x100), wall-clock, Table 2 parameters, loss curves, gallery."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    variants = list(summary["variants"])
    seeds = summary["seeds"]
    metrics = summary["metric_names"]
    h = _page("EIM demo report", "EIM demo: ClipCap baseline vs ClipCap + EIM")
    h += [f"<p>Preset <b>{esc(summary['preset'])}</b>, {seeds} seed(s), total wall-clock "
         f"{summary.get('seconds_total', 0):.0f} s. Every variant gets the same number of optimiser steps on its final "
         f"objective ({summary['schedule']['steps']}); EIM's extra stages are listed as extra cost.</p>"]
    if summary.get("verdict"):
        h.append(f"<p><b>Result:</b> {esc(summary['verdict'])}.</p>")

    # metric table
    h.append("<h2>COCO caption metrics (test split, %)</h2><table><tr><th>model</th>"
             + "".join(f"<th>{m}</th>" for m in metrics) + "</tr>")
    for v in variants:
        d = summary["variants"][v]
        cells = []
        for m in metrics:
            mm = d["metrics"][m]
            if mm["mean"] is None:
                reason = d.get("unavailable", {}).get(m, "not computed")
                cells.append(f"<td title='{esc(reason)}'>n/a</td>")
                continue
            txt = f"{mm['mean'] * 100:.2f}" + (f" ± {mm['std'] * 100:.2f}" if seeds > 1 else "")
            delta = d.get("delta_vs_baseline", {}).get(m)
            if v != summary.get("baseline") and delta is not None:
                txt += f"<br><span class='{'pos' if delta > 0 else 'neg'}'>{delta * 100:+.2f}</span>"
            cells.append(f"<td>{txt}</td>")
        h.append(f"<tr><td>{esc(d['label'])}</td>{''.join(cells)}</tr>")
    h.append("</table>")
    if any(summary["variants"][v].get("unavailable") for v in variants):
        reasons = {k: r for v in variants for k, r in summary["variants"][v].get("unavailable", {}).items()}
        h.append("<p class='small'>" + "; ".join(f"{k}: {esc(r)}" for k, r in reasons.items()) + "</p>")
    h += comparisons_html(summary)

    h += _wallclock(summary)

    # parameters (Table 2 layout)
    h.append("<h2>Parameters per segment (demo sizes)</h2><table><tr><th>model</th><th>CLIP tower</th>"
             "<th>CLIP output layer</th><th>CLIP tuning</th><th>ST</th><th>LLM</th><th>total</th><th>trainable</th></tr>")
    for v in variants:
        p = summary["variants"][v]["params"]
        vp = p["segments"]["vision"]["parts"]
        h.append(f"<tr><td>{esc(_label(summary, v))}</td><td>{vp['tower']:,}</td><td>{vp['output_layer']:,}</td>"
                 f"<td>{vp['tuning']:,}</td><td>{p['segments']['projector']['total']:,}</td>"
                 f"<td>{p['segments']['lm']['total']:,}</td><td>{p['total']:,}</td><td>{p['trainable']:,}</td></tr>")
    h.append("</table>")

    h += loss_curves_html(results, summary, plots, "loss")

    # gallery
    h.append("<h2>Gallery (test images, seed 0)</h2><div class='g'>")
    preds = {}
    for v in variants:
        res = json.loads((Path(results[(v, 0)]["run_dir"]) / "eval-coco" / "results.json").read_text())
        preds[v] = {str(r["image_id"]): r["caption"] for r in res}
    for i in range(min(GALLERY, len(test_ds))):
        s = test_ds[i]
        lines = "".join(f"<div><b>{esc(_label(summary, v))}:</b> {esc(preds[v].get(str(s.image_id), ''))}</div>"
                        for v in variants)
        refs = "".join(f"<li>{esc(r)}</li>" for r in s.meta.get("references", []))
        h.append(f"<div class='card'><img src='{img_uri(s.image)}' alt='test image {s.image_id}'><div>{lines}"
                 f"<div class='small'>references:<ul>{refs}</ul></div></div></div>")
    h.append("</div></body></html>")
    (out / "report.html").write_text("\n".join(h))


def metric_table_html(summary, title, metrics, fmt=lambda x: "n/a" if x is None else f"{x:.2f}", extra=None):
    """A table of one row per variant: each metric's mean (± std over several seeds) and its delta to
    the baseline; ``extra``: the header of a last column listing the variant's ``extra`` counts
    (``unparsed`` answers, or ``other`` ones)."""
    seeds, base = summary["seeds"], summary.get("baseline")
    h = [f"<h2>{esc(title)}</h2><table><tr><th>model</th>" + "".join(f"<th>{esc(m)}</th>" for m in metrics)
         + (f"<th>{esc(extra)}</th>" if extra else "") + "</tr>"]
    for v, d in summary["variants"].items():
        cells = []
        for m in metrics:
            mm = d["metrics"][m]
            txt = fmt(mm["mean"])
            if seeds > 1 and mm["std"] is not None:
                txt += f" ± {fmt(mm['std'])}"
            delta = d.get("delta_vs_baseline", {}).get(m)
            if v != base and delta is not None:
                txt += f"<br><span class='{'pos' if delta > 0 else 'neg' if delta < 0 else ''}'>{delta:+.2f}</span>"
            cells.append(f"<td>{txt}</td>")
        tail = ""
        if extra:
            tail = f"<td>{' / '.join(map(str, d['extra'].get('unparsed', d['extra'].get('other'))))}</td>"
        h.append(f"<tr><td>{esc(d['label'])}</td>{''.join(cells)}{tail}</tr>")
    h.append("</table>")
    return h


def _fmt(task, x):
    return "n/a" if x is None else f"{x:.2f}" if task == "scienceqa" else f"{x:.1f}"


def _predictions(task, eval_dir):
    """{key: prediction}: ScienceQA qid, or MME (image, question)."""
    ev = Path(eval_dir)
    if task == "scienceqa":
        return json.loads((ev / "predictions.json").read_text())
    preds = {}
    for f in sorted((ev / "mme_results").glob("*.txt")):
        for line in f.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t", 3)
            if len(parts) == 4:
                preds[(f.stem, parts[0], parts[1])] = parts[3]
    return preds


def _example_key(task, s):
    return str(s.meta["qid"]) if task == "scienceqa" else (s.meta["subtask"], s.meta["image_name"], s.meta["question"])


def _examples(task, test_ds, subtasks):
    """A few test questions: for ScienceQA both text-only and image problems."""
    idx = list(range(len(test_ds)))
    if task == "scienceqa":
        text = [i for i in idx if test_ds[i].image is None][: EXAMPLES // 2]
        img = [i for i in idx if test_ds[i].image is not None][: EXAMPLES - len(text)]
        return sorted(text + img)
    per = max(1, EXAMPLES // len(subtasks))
    seen, out = {}, []
    for i in idx:
        sub = test_ds[i].meta["subtask"]
        if seen.get(sub, 0) < per:
            seen[sub] = seen.get(sub, 0) + 1
            out.append(i)
    return out


def write_lavin_report(out, summary, results, test_ds):
    """LaVIN demo (ScienceQA or MME): scores by category, wall-clock, parameters, loss curves, examples."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    task, seeds, variants = summary["task"], summary["seeds"], list(summary["variants"])
    metric_names, sch, data = summary["metric_names"], summary["schedule"], summary["data"]
    subtasks = metric_names[1:] if task == "mme" else ()
    title = ("ScienceQA-format problems (QCM-ALE)" if task == "scienceqa"
             else "MME-format yes/no questions after instruction tuning on LLaVA-format conversations")
    lm = "SmolLM2-135M-Instruct" if sch["lm"] == "smol" else "a tiny LLaMA pretrained on the training text"
    h = _page(f"EIM demo: {task}", f"EIM demo: LaVIN vs LaVIN + EIM on {title}")
    h += [f"<p>Preset <b>{esc(summary['preset'])}</b>, {seeds} seed(s), total wall-clock "
         f"{summary.get('seconds_total', 0):.0f} s. LLM: {esc(lm)}; CLIP: the demo's small pretrained CLIP. "
         f"Both variants get <b>{sch['steps']}</b> optimiser steps on <code>loss_base</code> (batch "
         f"{sch['batch_size']}); LaVIN + EIM splits them into its Adapter stage and its base + loss_IE stage, and "
         f"its loss_ST and loss_LM stages are extra cost.</p>"]
    train_note = (f"the first {data['train_samples']} training samples" if sch["train_samples"] is not None
                  else f"all {data['train_samples']} training samples")
    if task == "scienceqa":
        test_note = (f"the whole test split: {data['test_samples']} problems, {data['test_text_only']} of them "
                     f"text-only (no image tokens, LaVIN's 'no image' modality token)")
    else:
        test_note = (f"all {data['test_samples']} questions ({data['test_images']} images) of the "
                     f"{len(subtasks)} MME subtasks")
    h.append(f"<p class='small'>Data: {esc(train_note)} ({data['train_text_only']} text-only); evaluated on "
             f"{esc(test_note)}. Training keeps {sch['max_length']} text tokens per sample"
             + (" (the whole prompt and 'The answer is X.'; the rationale is cut)" if task == "scienceqa" else "")
             + f"; generation: {'greedy' if sch['beams'] == 1 else str(sch['beams']) + ' beams'}, "
             f"{sch['max_new_tokens']} new tokens, prompts up to {sch['max_prompt_tokens']} tokens.</p>")
    if task == "mme":
        h.append("<p class='small'>MME counts an answer only when its first 4 characters hold yes/no; the "
                 "generated LLaVA-format conversations hold no yes/no questions, so 'other answers' counts the "
                 "replies given in another form (scored wrong).</p>")
    if summary.get("verdict"):
        h.append(f"<p><b>Result:</b> {esc(summary['verdict'])}.</p>")

    unit = "accuracy, %" if task == "scienceqa" else "score: 100·acc + 100·acc+, max 200 per subtask"
    extra_col = "unparsed" if task == "scienceqa" else "other answers"
    h += metric_table_html(summary, f"{'ScienceQA' if task == 'scienceqa' else 'MME'} ({unit})", metric_names,
                           fmt=lambda x: _fmt(task, x), extra=extra_col)
    h += comparisons_html(summary)

    h += _wallclock(summary)

    h.append("<h2>Parameters per segment</h2><table><tr><th>model</th><th>CLIP tower</th><th>CLIP adapters</th>"
             "<th>ST</th><th>LLM base</th><th>LLM adapters</th><th>modality token</th><th>total</th>"
             "<th>trainable</th></tr>")
    for v in variants:
        pr = summary["variants"][v]["params"]
        seg = pr["segments"]
        lp = seg["lm"].get("parts", {})
        h.append(f"<tr><td>{esc(_label(summary, v))}</td><td>{seg['vision']['parts']['tower']:,}</td>"
                 f"<td>{seg['vision']['parts']['tuning']:,}</td><td>{seg['projector']['total']:,}</td>"
                 f"<td>{lp.get('base', seg['lm']['total']):,}</td><td>{lp.get('adapters', 0):,}</td>"
                 f"<td>{lp.get('modality_embedding', 0):,}</td><td>{pr['total']:,}</td>"
                 f"<td>{pr['trainable']:,}</td></tr>")
    h.append("</table>")

    h += loss_curves_html(results, summary, plots, f"loss_{task}")

    h.append("<h2>Examples (test split, seed 0)</h2>")
    preds = {v: _predictions(task, results[(v, 0)]["eval_dir"]) for v in variants}
    for i in _examples(task, test_ds, subtasks):
        s = test_ds[i]
        pic = (f"<img src='{img_uri(s.image)}' alt='test image {esc(str(s.image_id))}'>" if s.image
               else "<div class='noimg'>text only</div>")
        key = _example_key(task, s)
        answer = s.meta.get("answer", s.response)
        lines = "".join(f"<div><b>{esc(_label(summary, v))}:</b> {esc(preds[v].get(key, ''))}</div>" for v in variants)
        h.append(f"<div class='card'>{pic}<div><pre>{esc(s.instruction)}</pre>"
                 f"<div class='small'>answer: {esc(str(answer))}</div>{lines}</div></div>")
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h), encoding="utf-8")
