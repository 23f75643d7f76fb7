"""``report.html`` of the LLaVA demo (docs/harness.md): MME and caption scores with deltas and
intervals, wall-clock, parameters, loss curves, examples from both benchmarks. What a variant tunes
in CLIP is read from its run's recipe (``vision.trainable``; docs/design.md §3), never assumed."""

import json
from pathlib import Path

from eim.training.checkpoint import load_recipe_json
from eim_harness.report import (_examples, _example_key, _label, _page, _predictions, _wallclock, comparisons_html, esc,
                             img_uri, loss_curves_html, metric_table_html)

GROUPS = (("MME (score: 100·acc + 100·acc+, max 200 per subtask; accuracy and accuracy+ in %)",
           ("perception", "existence", "count", "position", "color", "mme_acc", "mme_acc_plus")),
          ("Captions on the test images (COCO metrics x100)", ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")))
# what each ``vision.trainable`` (eim.config.VISION_TRAINABLE) tunes in CLIP, as the report names it;
# prompts, LoRA and adapters are parameters of their own (the "tuning" part of eim params' vision segment)
CLIP_TUNING = {"frozen": None, "prompt": "CLIP prompts (VPT)", "lora": "CLIP LoRA (q/v)",
               "full": "every CLIP weight", "lavin": "CLIP adapters (LaVIN)"}
ADDED = ("prompt", "lora", "lavin")


def clip_tuning(trainable):
    """The report's name for what ``vision.trainable`` tunes in CLIP (None: nothing)."""
    return CLIP_TUNING[trainable]


def tuning_column(methods):
    """The heading of the column of CLIP's tuning parameters: the one method of the variants that adds
    some, or a general heading."""
    named = {clip_tuning(m) for m in methods if m in ADDED}
    return named.pop() if len(named) == 1 else "CLIP tuning parameters"


def write_llava_report(out, summary, results, test_ds):
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    sch, data, variants = summary["schedule"], summary["data"], list(summary["variants"])
    vision = {v: load_recipe_json(results[(v, 0)]["run_dir"]).vision.trainable for v in variants}
    eim_tunes = clip_tuning(vision.get("llava_eim", "frozen"))
    h = _page("EIM demo: llava", "EIM demo: LLaVA vs LLaVA + EIM (captions, then instructions; MME and captions)")
    h += [f"<p>Preset <b>{esc(summary['preset'])}</b>, {summary['seeds']} seed(s), total wall-clock "
          f"{summary.get('seconds_total', 0):.0f} s. LLM: a tiny LLaMA pretrained on the training text, fully tuned "
          "in stage 2; CLIP: the demo's small pretrained one, its second-to-last layer's patch tokens (LLaVA's "
          f"features). Both variants get <b>{sch['pretrain_steps']}</b> projector-alignment steps on the captions "
          f"and <b>{sch['finetune_steps']}</b> tuning steps on the LLaVA-format conversations (batch "
          f"{sch['batch_size']}); LLaVA + EIM's loss_ST ({sch['st_steps']}) and loss_LM ({sch['lm_steps']}) stages "
          "are extra cost, and its tuning stage adds loss_IE"
          + (f", with {esc(eim_tunes)} trained" if eim_tunes else " (CLIP frozen)") + ".</p>",
          f"<p class='small'>Training data: {esc(json.dumps(data['train_samples']))} samples "
          f"({data['train_text_only']} text-only conversations); test: {esc(json.dumps(data['test_samples']))}. "
          f"MME answers: {sch['max_new_tokens']} new tokens, greedy; captions: {sch['caption_new_tokens']}, cut at "
          "the first '.'. MME counts an answer only when its first 4 characters hold yes/no.</p>"]
    if summary.get("verdict"):
        h.append(f"<p><b>Result:</b> {esc(summary['verdict'])}.</p>")
    for i, (title, metrics) in enumerate(GROUPS):
        h += metric_table_html(summary, title, metrics, extra="answers not yes/no" if i == 0 else None)
    h += comparisons_html(summary)
    h += _wallclock(summary)
    h.append("<h2>Parameters per segment</h2><table><tr><th>model</th><th>CLIP tower</th>"
             f"<th>{esc(tuning_column(vision.values()))}</th>"
             "<th>ST (mlp2x_gelu)</th><th>LLM</th><th>total</th><th>trainable</th></tr>")
    for v in variants:
        pr = summary["variants"][v]["params"]
        seg = pr["segments"]
        h.append(f"<tr><td>{esc(_label(summary, v))}</td><td>{seg['vision']['parts']['tower']:,}</td>"
                 f"<td>{seg['vision']['parts']['tuning']:,}</td><td>{seg['projector']['total']:,}</td>"
                 f"<td>{seg['lm']['total']:,}</td><td>{pr['total']:,}</td><td>{pr['trainable']:,}</td></tr>")
    h.append("</table>")
    h += loss_curves_html(results, summary, plots, "loss_llava")
    h.append("<h2>Examples (test split, seed 0)</h2>")
    mme = test_ds["mme"]
    preds = {v: _predictions("mme", results[(v, 0)]["eval_dir"]["mme"]) for v in variants}
    caps = {v: {str(c["image_id"]): c["caption"] for c in json.loads(
        (Path(results[(v, 0)]["eval_dir"]["coco"]) / "results.json").read_text())} for v in variants}
    for i in _examples("mme", mme, ("existence", "count", "position", "color")):
        s = mme[i]
        lines = "".join(f"<div><b>{esc(_label(summary, v))}:</b> {esc(preds[v].get(_example_key('mme', s), ''))}</div>"
                        for v in variants)
        h.append(f"<div class='card'><img src='{img_uri(s.image)}' alt='MME image'><div><pre>{esc(s.instruction)}</pre>"
                 f"<div class='small'>answer: {esc(s.meta.get('answer', ''))}</div>{lines}</div></div>")
    coco = test_ds["coco"]
    for i in range(min(4, len(coco))):
        s = coco[i]
        lines = "".join(f"<div><b>{esc(_label(summary, v))}:</b> {esc(caps[v].get(str(s.image_id), ''))}</div>"
                        for v in variants)
        refs = "; ".join(s.meta.get("references", [])[:2])
        h.append(f"<div class='card'><img src='{img_uri(s.image)}' alt='caption image'><div>"
                 f"<div class='small'>references: {esc(refs)}</div>{lines}</div></div>")
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h), encoding="utf-8")
