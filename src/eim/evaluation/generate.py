"""Generate with a trained checkpoint on a benchmark, write the predictions, score them (docs/design.md §6).

    eim eval RUN_DIR --task coco --data shapes/coco --out eval/coco
    eim eval RUN_DIR --task scienceqa --data shapes/scienceqa --out eval/sqa --beams 1
    eim eval RUN_DIR --task mme --data shapes/mme --out eval/mme

Library use::

    from eim.evaluation.generate import evaluate_checkpoint
    scores = evaluate_checkpoint("runs/clipcap", "coco", load_dataset(p, split="test", mode="eval"),
                                 "eval/coco")

What lands in ``out_dir`` (each prediction file in the format its scorer, and ``eim score``, reads):

- coco: ``results.json``, the standard COCO results list ``[{"image_id", "caption"}]``;
- scienceqa: ``predictions.json``, ``{qid: generated text}``;
- mme: ``mme_results/<subtask>.txt``, the official tool's ``image\\tquestion\\tgt\\tprediction``
  lines, the two questions of an image on consecutive lines;
- ``generation.json``: checkpoint, recipe, data, split, decoding settings and the prompt layout,
  so a number can be traced back to how it was made;
- ``scores.json``: the scorer's output, exactly what ``eim score ... --json`` prints.

Decoding follows the recipe's ``generation`` section (ClipCap: beam 5, 67 tokens, stop at '.'),
except where a benchmark needs otherwise (:data:`BENCHMARK_DEFAULTS`); explicit arguments win over both.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from eim import __version__
from eim.api import load_for_inference
from eim.errors import DataError
from eim.io import temp_sibling
from eim.evaluation.coco import score_coco_files
from eim.evaluation.mme import score_mme_dir
from eim.evaluation.scienceqa import OPTIONS, score_scienceqa_files
from eim.model.splice import TextEncoder
from eim.training.checkpoint import find_checkpoint
from eim.training.collate import Collator, to_device
from eim.training.tracking import image_positions
from eim.evaluation.predictions import PREDICTION_FILES, generate_predictions, write_predictions

BENCHMARKS = ("coco", "scienceqa", "mme")
# What the model sees: the run's last stage's conversation template (raw: the image tokens after
# the tokenizer's lead, BOS if any, then the instruction; docs/design.md §5)
PROMPT_LAYOUT = {"raw": "[lead][image tokens x P][instruction]"}
PROMPTS = {
    "coco": "empty instruction: the caption follows the image tokens (ClipCap)",
    "scienceqa": "LaVIN QCM-ALE prompt (eim.data.formats.scienceqa.PROMPT_TEMPLATE); text-only "
                 "problems get no image tokens",
    "mme": "the MME question as the benchmark gives it (its own 'Please answer yes or no.' "
           "suffix included; nothing added)",
}
# Task needs that override the recipe's generation section (explicit arguments override these).
# ScienceQA: the target is "The answer is X. BECAUSE: lecture solution" and only the letter is
# scored (docs/design.md §6), so decoding stops at the end of the answer sentence, whenever it
# comes; 64+ new tokens (as LaVIN's eval) are the cap for a model that never says it. A plain
# '.' stop would also cut a text whose first sentence is something else. `--stop-text ''` (EOS
# only) generates the rationale too.
ANSWER_STOPS = [f"The answer is {letter}." for letter in OPTIONS]
BENCHMARK_DEFAULTS = {"scienceqa": {"min_new_tokens": 64, "stop_text": ANSWER_STOPS}}


def resolve_settings(recipe, benchmark, num_beams=None, max_new_tokens=None, batch_size=None,
                     stop_text=None, max_prompt_tokens=None):
    """Decoding settings: explicit arguments, else the benchmark's needs, else the recipe's.

    None means "not given" everywhere; pass ``stop_text=""`` for "no stop text (EOS only)";
    ``stop_text`` may be a list (stop at the first of them: ScienceQA's answer sentences).
    max_prompt_tokens defaults to ``recipe.train.max_length`` (longer prompts keep their end).
    """
    g, need = recipe.generation, BENCHMARK_DEFAULTS.get(benchmark, {})
    if max_new_tokens is None:
        max_new_tokens = max(g.max_new_tokens, need.get("min_new_tokens", 0))
    if stop_text is None:
        stop_text = need["stop_text"] if "stop_text" in need else g.stop_text
    settings = {
        "num_beams": num_beams or g.num_beams,
        "max_new_tokens": max_new_tokens,
        "stop_text": stop_text or None,
        "batch_size": batch_size or g.batch_size,
        "max_prompt_tokens": max_prompt_tokens or recipe.train.max_length,
    }
    for k in ("num_beams", "max_new_tokens", "batch_size", "max_prompt_tokens"):
        if settings[k] < 1:
            raise ValueError(f"{k} must be >= 1, got {settings[k]}")
    return settings


def prompt_info(model, tok, proc, recipe, samples, max_prompt_tokens):
    """The prompt's layout for generation.json: template, lead tokens, P, first prompt, truncations."""
    template = recipe.stage_template()
    enc = TextEncoder.for_recipe(tok, recipe, max_length=max_prompt_tokens, image_positions=image_positions(model))
    n_image_tokens = None
    first_image = next((s for s in samples if s.image), None)
    if first_image is not None:  # P from one forward: it depends on projector and feature mode
        batch = to_device(Collator(enc, proc, mode="prompt", image_aspect_ratio=recipe.data.image_aspect_ratio)([first_image]),
                    next(model.parameters()).device)
        with torch.no_grad():
            n_image_tokens = int(model.image_tokens(model.image_features(batch)).shape[1])
    whole = TextEncoder.for_recipe(tok, recipe, max_length=10 ** 9)
    too_long = sum(len(whole.encode_prompt_sample(s)[0]) > enc.text_limit(s) for s in samples)
    return {
        "template": template,
        "layout": PROMPT_LAYOUT.get(template, f"the {template} template (eim data tokens RECIPE ... shows it)"),
        "first_prompt": whole.render(samples[0], prompt=True) if len(samples) and template != "raw" else None,
        "lead": tok.convert_ids_to_tokens(enc.lead),
        "image_tokens": n_image_tokens,
        "first_instruction": samples[0].instruction if len(samples) else None,
        "truncated_prompts": too_long,  # prompts over max_prompt_tokens (the image's positions counted) keep their last tokens
    }


def score_predictions(benchmark, dataset, out_dir, spice=None, meteor=True):
    """Score ``out_dir``'s prediction file with the library code behind ``eim score``; the results
    also carry ``per_image`` statistics (:mod:`eim.evaluation.intervals`).

    Records the dataset skipped as bad (``--skip-bad``) have no prediction: they are left out of
    the scoring and listed in the result's ``"skipped"``."""
    out_dir, split = Path(out_dir), dataset.split
    skipped = list(getattr(dataset, "skipped", ())) or None
    if benchmark == "coco":
        return score_coco_files(dataset.path, out_dir / PREDICTION_FILES[benchmark], split, spice=spice,
                                skipped=skipped, per_image=True, meteor=meteor)
    if benchmark == "scienceqa":
        problems, splits = dataset.files[:2]
        return score_scienceqa_files(problems, out_dir / PREDICTION_FILES[benchmark], split, splits,
                                     skipped=skipped, per_image=True)
    return score_mme_dir(out_dir / PREDICTION_FILES[benchmark], skipped=skipped, per_image=True)


def check_benchmark_data(benchmark, dataset):
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    fmt = getattr(dataset, "format", None)
    if fmt != benchmark:
        raise DataError(f"--task {benchmark} needs a {benchmark} dataset, got {fmt or 'an unknown'} data",
                        remedy=f"point --data at the {benchmark} data (or pass --task {fmt})")
    if benchmark == "coco" and dataset.mode != "eval":
        raise DataError("COCO evaluation needs the dataset in eval mode (one sample per image)",
                        remedy='load_dataset(..., mode="eval")')
    if len(dataset) == 0:
        raise DataError(f"the {dataset.split!r} split has no samples", remedy="check --split")


def evaluate_checkpoint(checkpoint, benchmark, dataset, out_dir, *, num_beams=None,
                        max_new_tokens=None, batch_size=None, stop_text=None,
                        max_prompt_tokens=None, spice=None, device=None, quiet=False, meteor=True):
    """Generate on ``dataset`` with ``checkpoint``, write predictions + generation.json, score.

    checkpoint: run folder, stage folder or model.safetensors (as ``eim caption``). benchmark: coco,
    scienceqa or mme, matching the dataset's format (COCO in eval mode). Decoding arguments as
    :func:`resolve_settings`. spice: None = run SPICE when available, False = skip (meteor: the
    same for METEOR, COCO only). Also writes ``per_image.json``. device:
    default CUDA when available. Returns the scorer's dict (also written to scores.json).
    """
    check_benchmark_data(benchmark, dataset)
    model, tok, proc, recipe = load_for_inference(checkpoint)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    settings = resolve_settings(recipe, benchmark, num_beams, max_new_tokens, batch_size, stop_text,
                                max_prompt_tokens)
    samples = [dataset[i] for i in range(len(dataset))]
    out_dir = Path(out_dir)

    t0 = time.perf_counter()
    preds = generate_predictions(model, tok, proc, recipe, samples, quiet=quiet,
                                 desc=f"eval {benchmark}", **settings)
    seconds = time.perf_counter() - t0
    # everything is written beside out_dir and moved in once scored: a failed evaluation (a
    # scorer's error, an interrupt) leaves an earlier one in out_dir as it was
    stage = temp_sibling(out_dir)
    try:
        pred_path = write_predictions(benchmark, samples, preds, stage)
        info = {
            "checkpoint": os.path.abspath(checkpoint),
            "weights": os.path.abspath(find_checkpoint(checkpoint)[1][-1]),
            "recipe": recipe.name,
            "benchmark": benchmark,
            "data": os.path.abspath(getattr(dataset, "path", None) or getattr(dataset, "root", None)
                                    or dataset.files[0]),
            "data_format": dataset.format,
            "split": dataset.split,
            "samples": len(samples),
            "skipped": [{"id": rid, "reason": why} for rid, why in getattr(dataset, "skipped", ())],
            "predictions": os.path.relpath(pred_path, stage),
            "generation": settings,
            "prompt": dict(prompt_info(model, tok, proc, recipe, samples,
                                       settings["max_prompt_tokens"]), source=PROMPTS[benchmark]),
            "device": str(device),
            "generation_seconds": round(seconds, 3),
            "eim_version": __version__,
        }
        if info["prompt"]["truncated_prompts"] and not quiet:
            print(f"eim eval: {info['prompt']['truncated_prompts']} of {len(samples)} prompts are "
                  f"longer than {settings['max_prompt_tokens']} tokens and keep only their end "
                  "(raise --max-prompt-tokens if the LM has room)", file=sys.stderr)
        (stage / "generation.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        scores = score_predictions(benchmark, dataset, stage, spice=spice, meteor=meteor)
        per_image = scores.pop("per_image", None)
        names = [PREDICTION_FILES[benchmark], "generation.json", "scores.json"]
        if per_image is not None:  # what paired intervals are computed from
            (stage / "per_image.json").write_text(json.dumps(per_image) + "\n", encoding="utf-8")
            names.append("per_image.json")
        (stage / "scores.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
            os.replace(stage / name, out_dir / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return scores


__all__ = ["BENCHMARKS", "PREDICTION_FILES", "PROMPT_LAYOUT", "BENCHMARK_DEFAULTS", "ANSWER_STOPS", "resolve_settings",
           "generate_predictions", "prompt_info", "write_predictions", "score_predictions",
           "evaluate_checkpoint"]
