"""Predictions of a model on samples, and the files benchmarks read them from (docs/design.md §6):
what ``eim eval``, ``eim caption`` and validation during training share. Nothing here loads a
checkpoint (:mod:`eim.evaluation.generate` does).
"""

import json
import re
from pathlib import Path

from eim.model.splice import TextEncoder
from eim.model.template import stop_text as template_stop
from eim.progress_bar import progress_bar
from eim.training.collate import Collator, to_device
from eim.training.tracking import image_positions

# Where each benchmark's predictions go, relative to out_dir.
PREDICTION_FILES = {"coco": "results.json", "scienceqa": "predictions.json", "mme": "mme_results"}


def generate_predictions(model, tok, proc, recipe, samples, batch_size=16, num_beams=1,
                         max_new_tokens=30, stop_text=None, max_prompt_tokens=None, quiet=False,
                         desc="generate"):
    """One generated string per sample, in order (batched, with a progress bar unless ``quiet``:
    :func:`eim.progress_bar.progress_bar`).

    samples: any sequence of :class:`eim.data.Sample` (a dataset works). Each prompt is the sample's
    conversation in the run's last stage's template (``raw``: ``[lead][image tokens][instruction]``);
    text-only samples (``image`` None) get no image tokens. The model runs on whatever device it is on.
    """
    template = recipe.stage_template()
    collate = Collator(TextEncoder.for_recipe(tok, recipe, max_length=max_prompt_tokens,
                                              image_positions=image_positions(model)), proc,
                       mode="prompt", image_aspect_ratio=recipe.data.image_aspect_ratio)
    device = next(model.parameters()).device
    out = []
    with progress_bar(total=len(samples), desc=desc, unit="sample", disable=quiet) as bar:
        for start in range(0, len(samples), batch_size):
            chunk = [samples[i] for i in range(start, min(start + batch_size, len(samples)))]
            batch = to_device(collate(chunk), device)
            out += model.generate(batch, tok, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                  stop_text=stop_text, end_text=template_stop(template))
            bar.update(len(chunk))
    return out


def _one_line(text):
    """Predictions in tab-separated files: no tabs or newlines inside a field."""
    return re.sub(r"[\t\r\n]+", " ", text)


def write_predictions(benchmark, samples, predictions, out_dir):
    """Write the benchmark's prediction file(s) under ``out_dir``; returns the path written."""
    out_dir = Path(out_dir)
    path = out_dir / PREDICTION_FILES[benchmark]
    if benchmark == "coco":
        data = [{"image_id": s.image_id, "caption": p} for s, p in zip(samples, predictions)]
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    elif benchmark == "scienceqa":
        data = {str(s.meta["qid"]): p for s, p in zip(samples, predictions)}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    else:  # mme: rows in the dataset's order (subtask, image, then the image's two questions)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.txt"):  # a stale subtask from an earlier run would be scored
            old.unlink()
        rows = {}
        for s, p in zip(samples, predictions):
            m = s.meta
            rows.setdefault(m["subtask"], []).append(
                "\t".join((m["image_name"], m["question"], m["answer"], _one_line(p))))
        for sub, lines in rows.items():
            (path / f"{sub}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
