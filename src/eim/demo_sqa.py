"""``eim demo --task scienceqa|mme``: LaVIN vs LaVIN + EIM on the embedded data, end to end (issue 7).

    eim demo --task scienceqa --preset smol    # SmolLM2-135M as the LLM; 36 min measured on 2 idle CPU cores
    eim demo --task scienceqa                  # tiny preset: a tiny pretrained LLaMA (27 min measured, cores shared)
    eim demo --task mme --preset smol          # instruction tuning on LLaVA-format data, MME scores

``scienceqa``: train ``lavin`` (baseline) and ``lavin_eim`` on the shapes world's ScienceQA
problems in LaVIN's QCM-ALE format (text-only problems go through the same path, with no image
tokens and LaVIN's "no image" modality token), then score accuracy by category on the test split.
``mme``: train both on the LLaVA-format conversations (``llava/instruct.json``, the paper's
chatbot run used LLaVA-158k + Alpaca) and score the MME-format yes/no questions (``mme/``).
Default output folder: ``eim-demo-<task>``; ``report.html`` and ``summary.json`` land in it.

Decisions, each visible in the report:

- **LLM.** LaVIN is a LLaMA-family method, so both presets use a LLaMA: ``smol`` the real
  SmolLM2-135M-Instruct (``eim.smol``), ``tiny``/``test`` a tiny ``LlamaForCausalLM``
  pretrained by :mod:`eim.pretrain` on the training text (context long enough for the
  ScienceQA prompts), in its own cache (``encoders-llama/``) so the ClipCap demo's GPT-2 cache
  in the same folder is never overwritten. The CLIP is the demo's small pretrained one.
- **Equal training on the final objective.** LaVIN trains ``steps`` optimiser steps on
  ``loss_base``. LaVIN + EIM gets the same ``steps`` steps on ``loss_base``, split as in the
  recipe (LaVIN's 20 epochs -> EIM's Adapter 10 + base+IE 10): ``steps - steps // 2`` in the
  Adapter stage, ``steps // 2`` in base + loss_IE. Its ``loss_ST`` and ``loss_LM`` stages are
  reported as extra cost, as in the ClipCap demo.
- **Budget.** Token count drives the cost on a CPU: ``train.max_length`` is the fewest tokens that
  keep every training prompt whole with its answer sentence, so long problems lose the rationale
  ("BECAUSE: ...") past it (see :func:`fit_lengths`); training
  uses the first ``train_samples`` training samples (the ``loss_LM`` bank runs the LLM over each
  of them once); evaluation generates ``max_new_tokens`` tokens, enough for "The answer is X."
  (the scorer reads only the letter), on the *whole* test split of the generated world.
"""

import html
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from eim.demo import Progress, _mean_std, _mmss, _say, ensure_shapes

TASKS = ("scienceqa", "mme")
VARIANTS = ("lavin", "lavin_eim")
LABELS = {"lavin": "LaVIN (baseline)", "lavin_eim": "LaVIN + EIM"}
SQA_METRICS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg")
MME_SUBTASKS = ("existence", "count", "position", "color")  # the subtasks the shapes world has
MME_METRICS = ("perception",) + MME_SUBTASKS
# tiny/test LLM: a LLaMA (LaVIN's architecture) instead of the ClipCap demo's GPT-2; ScienceQA
# prompt + answer sentence is up to ~100 tokens, so it is pretrained on 128-token windows.
TINY_LLAMA = {"arch": "llama", "context": 128, "max_positions": 256, "batch_size": 16}


@dataclass
class TaskPreset:
    """Data, schedule and decoding of a task demo; every field is a knob for a quick experiment."""

    world_train: int = 2000  # shapes world size (= the ClipCap demo's, so its data can be shared)
    world_test: int = 200  # test images = ScienceQA test problems (scored in full); MME gets test//4 per subtask
    size: int = 64  # image side in pixels
    train_samples: Optional[int] = None  # first N training samples (None: all); bounds the loss_LM bank cost
    steps: int = 300  # optimiser steps on loss_base, equal for both variants (EIM: Adapter + base+IE)
    st_steps: int = 60  # EIM stage 1 (loss_ST), extra cost
    lm_steps: int = 60  # EIM stage 2 (loss_LM), extra cost
    batch_size: int = 16
    lr: float = 9e-3  # LaVIN's ScienceQA lr (adapters only, zero-initialised)
    warmup: int = 20
    # text tokens per training sample; None: the fewest that keep every training prompt whole with
    # its answer sentence ("The answer is X."; LLaVA: the whole response) and EOS (fit_lengths)
    max_length: Optional[int] = None
    max_prompt_tokens: Optional[int] = None  # prompt tokens kept at evaluation; None: the longest test prompt
    max_new_tokens: int = 8  # "The answer is X." (ScienceQA) / "Yes"/"No" (MME)
    beams: int = 1
    eval_batch_size: int = 16
    lm: str = "tiny-llama"  # tiny-llama: eim.pretrain's tiny preset as a LLaMA | smol: SmolLM2-135M
    encoders: dict = field(default_factory=dict)  # overrides of eim.pretrain.PRESETS (sizes, steps)
    overrides: dict = field(default_factory=dict)  # extra recipe overrides for both variants


_TEST_ENCODERS = {"vocab_size": 300,
                  "clip": dict(image_size=32, width=32, layers=1, heads=2, text_width=32, projection_dim=32,
                               steps=5, batch_size=16),
                  "lm": dict(width=32, layers=1, heads=2, steps=5, batch_size=8, context=64)}

PRESETS = {
    "scienceqa": {
        "tiny": TaskPreset(),
        # SmolLM2-135M, sized for <= 60 min on 2 CPU cores from measured costs (1-thread CPU time
        # calibrated to DESIGN §7's 1.7 s per 8x32-token forward+backward): LaVIN step 3.5 s,
        # LaVIN+EIM Adapter/base+IE step 4.1 s, loss_LM step 2.8 s, loss_ST step ~0, loss_LM bank
        # 0.2 s/sample, one evaluation of the 200 test problems 38 s, small CLIP + conversion 50 s
        # -> 50 + 300*3.5 + 1000*0.2 + 60*2.8 + 300*4.1 + 2*38 = ~46 min estimated; measured end to
        # end: 36 min (steps were faster than estimated: 2.7 s LaVIN, 3.3 s Adapter). Batch 8 (tokens are the
        # cost), lr = LaVIN's 9e-3 at batch 32 scaled by sqrt(8/32).
        "smol": TaskPreset(train_samples=1000, steps=300, st_steps=60, lm_steps=60, batch_size=8, lr=4.5e-3,
                           warmup=20, lm="smol"),
        "test": TaskPreset(world_train=24, world_test=8, size=32, steps=4, st_steps=2, lm_steps=2, batch_size=8,
                           warmup=0, max_new_tokens=6, eval_batch_size=8, encoders=_TEST_ENCODERS),
    },
    "mme": {
        "tiny": TaskPreset(max_new_tokens=4),
        # the ScienceQA smol schedule; LLaVA turns are shorter than ScienceQA prompts, so it is cheaper
        "smol": TaskPreset(train_samples=1000, steps=300, st_steps=60, lm_steps=60, batch_size=8, lr=4.5e-3,
                           warmup=20, max_new_tokens=4, lm="smol"),
        "test": TaskPreset(world_train=24, world_test=8, size=32, steps=4, st_steps=2, lm_steps=2, batch_size=8,
                           warmup=0, max_new_tokens=4, eval_batch_size=8, encoders=_TEST_ENCODERS),
    },
}


class Head:
    """The first ``n`` samples of a dataset (sample i keeps index i, so bank row i is sample i).

    Carries what the trainer and the bank fingerprint read (format, split, mode, files); the
    record count is part of the bank fingerprint, so a bank of the full set is never reused.
    """

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, min(n, len(dataset))
        for k in ("format", "split", "mode", "files", "path", "root"):
            if hasattr(dataset, k):
                setattr(self, k, getattr(dataset, k))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        return self.dataset[i % self.n]

    def __iter__(self):
        return (self[i] for i in range(self.n))


def recipe_for(variant, preset, clip_dir, lm_dir, seed):
    """``lavin`` / ``lavin_eim`` pointed at the demo encoders with the preset's schedule."""
    from eim.config import load_recipe

    p = preset
    over = {
        "vision.name_or_path": str(clip_dir), "lm.name_or_path": str(lm_dir),
        "train.batch_size": p.batch_size, "train.lr": p.lr, "train.warmup_steps": p.warmup,
        "train.seed": seed, "train.save_every": 10_000, "train.log_every": 5,
        "generation.num_beams": p.beams, "generation.max_new_tokens": p.max_new_tokens,
    }
    if p.max_length is not None:  # None until fit_lengths has seen the data: the recipe's own value
        over["train.max_length"] = p.max_length
    if variant == "lavin_eim":  # st -> lm -> adapter -> base+ie; adapter + base+ie = the baseline's steps
        lengths = [p.st_steps, p.lm_steps, p.steps - p.steps // 2, p.steps // 2]
    else:
        lengths = [p.steps]
    for i, n in enumerate(lengths):
        over[f"stages.{i}.epochs"] = None
        over[f"stages.{i}.steps"] = n
    over.update(p.overrides)
    return load_recipe(variant, over)


def _encoders(out, data, p, quiet):
    from eim.pretrain import cached_encoders

    if p.lm == "smol":  # same cache folder as the ClipCap demo's smol preset: shared when --out is
        return cached_encoders(data, out / "encoders", preset="smol", quiet=quiet, overrides=p.encoders or None)
    over = json.loads(json.dumps(p.encoders or {}))
    over["lm"] = {**TINY_LLAMA, **over.get("lm", {})}
    return cached_encoders(data, out / "encoders-llama", preset="tiny", quiet=quiet, overrides=over)


def _datasets(task, data, p):
    from eim.data import load_dataset

    if task == "scienceqa":
        train_ds = load_dataset(data / "scienceqa", split="train", mode="train")
        test_ds = load_dataset(data / "scienceqa", split="test", mode="eval")
    else:
        train_ds = load_dataset(data / "llava" / "instruct.json", mode="train")
        test_ds = load_dataset(data / "mme", mode="eval")
    if p.train_samples is not None and p.train_samples < len(train_ds):
        train_ds = Head(train_ds, p.train_samples)
    return train_ds, test_ds


def answer_part(task, response):
    """What training must keep of a response: ScienceQA's answer sentence, else all of it."""
    return response.split(" BECAUSE:")[0] if task == "scienceqa" else response


def fit_lengths(tokenizer, task, train_ds, test_ds):
    """-> (max_length, max_prompt_tokens) fitted to the data with the LLM's tokenizer (see TaskPreset)."""
    from eim.model.splice import TextEncoder

    enc = TextEncoder(tokenizer)

    def lengths(texts):
        return [len(x) for x in tokenizer(texts, add_special_tokens=False).input_ids] if texts else [0]

    train = [train_ds[i] for i in range(len(train_ds))]
    prompts = lengths([s.instruction for s in train])
    answers = lengths([TextEncoder.join(s.instruction, answer_part(task, s.response)) for s in train])
    max_length = len(enc.lead) + max(p + a for p, a in zip(prompts, answers)) + 1
    max_prompt = len(enc.lead) + max(lengths([test_ds[i].instruction for i in range(len(test_ds))]))
    return max_length, max_prompt


def _eval_fresh(ev, run_dir, settings, n):
    """Reuse an evaluation only when it scored this many samples with these settings after the
    checkpoint was last written."""
    scores, gen = ev / "scores.json", ev / "generation.json"
    if not (scores.exists() and gen.exists()):
        return False
    info = json.loads(gen.read_text())
    same = info.get("samples") == n and all(info["generation"].get(k) == v for k, v in settings.items())
    weights = [f.stat().st_mtime for f in Path(run_dir).glob("stage-*/model.safetensors")]
    return same and (not weights or scores.stat().st_mtime >= max(weights))


def run_task_demo(task, out=None, preset="tiny", seeds=1, quiet=False, variants=VARIANTS, callbacks=()):
    """Run the ``task`` pipeline into ``out``; returns the summary dict (also ``out/summary.json``).

    preset: a name in ``PRESETS[task]`` or a :class:`TaskPreset`. callbacks: passed to the trainer,
    ``f(trainer, stage_index, step)`` after every optimiser step (timing, progress).
    """
    from eim.commands.train import quiet_transformers, train
    from eim.errors import EIMError
    from eim.evaluation.generate import evaluate_checkpoint
    from eim.io import write_json

    if task not in TASKS:
        raise EIMError(f"unknown demo task {task!r} (choose from coco, {', '.join(TASKS)})")
    quiet_transformers()
    p = PRESETS[task][preset] if isinstance(preset, str) else preset
    name = preset if isinstance(preset, str) else "custom"
    out = Path(out or f"eim-demo-{task}")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    runs = [(v, s) for s in range(seeds) for v in variants]
    prog = Progress.for_runs(runs, lambda v, s: recipe_for(v, p, "clip", "lm", s), quiet)

    prog.start("data", "1/5 data: the shapes world (ScienceQA, LLaVA and MME formats)")
    data = ensure_shapes(out / "data", p.world_train, p.world_test, p.size, quiet)
    prog.finish("data")

    lm_name = "SmolLM2-135M-Instruct" if p.lm == "smol" else "a tiny LLaMA"
    prog.start("encoders", f"2/5 encoders: small CLIP + {lm_name}")
    enc = _encoders(out, data, p, quiet)
    _say(quiet, f"      {'reused' if enc['reused'] else 'built'} encoders: {enc['clip']}, {enc['lm']}")
    prog.finish("encoders")

    train_ds, test_ds = _datasets(task, data, p)
    if p.max_length is None or p.max_prompt_tokens is None:
        from transformers import AutoTokenizer

        fit = fit_lengths(AutoTokenizer.from_pretrained(enc["lm"]), task, train_ds, test_ds)
        p = replace(p, max_length=p.max_length or fit[0], max_prompt_tokens=p.max_prompt_tokens or fit[1])
        _say(quiet, f"      {p.max_length} text tokens per training sample, prompts up to {p.max_prompt_tokens} tokens")
    results = {}
    for v, s in runs:
        run_dir = out / "runs" / f"{task}-{v}-seed{s}"
        recipe = recipe_for(v, p, enc["clip"], enc["lm"], seed=s)
        prog.start(f"train-{v}-{s}", f"3/5 train {v} (seed {s}) on {len(train_ds)} {task} training samples: "
                   + " -> ".join(f"{st.name}[{'+'.join(st.losses)}] {st.steps} steps" for st in recipe.stages))
        t = time.time()
        stages = train(recipe, train_ds, run_dir, resume=True, quiet=quiet, banks_dir=out / "banks",
                       callbacks=callbacks)
        train_s = time.time() - t
        prog.finish(f"train-{v}-{s}")
        prog.start(f"eval-{v}-{s}", f"4/5 evaluate {v} (seed {s}) on {len(test_ds)} {task} test questions")
        t = time.time()
        ev = run_dir / f"eval-{task}"
        settings = {"num_beams": p.beams, "max_new_tokens": p.max_new_tokens, "max_prompt_tokens": p.max_prompt_tokens}
        if _eval_fresh(ev, run_dir, settings, len(test_ds)):
            scores = json.loads((ev / "scores.json").read_text())
            _say(quiet, f"      reusing {ev}/scores.json")
        else:
            scores = evaluate_checkpoint(run_dir, task, test_ds, ev, batch_size=p.eval_batch_size, stop_text="",
                                         quiet=quiet, **settings)
        results[(v, s)] = {"stages": stages, "scores": scores, "train_seconds": train_s,
                           "eval_seconds": time.time() - t, "run_dir": str(run_dir), "eval_dir": str(ev)}
        prog.finish(f"eval-{v}-{s}")

    prog.start("report", "5/5 report")
    summary = build_summary(task, results, variants, seeds, p, name, enc, prog.pipeline_seconds(), train_ds, test_ds)
    summary["seconds_total"] = round(time.time() - t_start, 1)
    write_task_report(out, summary, results, test_ds)
    write_json(summary, out / "summary.json")
    prog.finish("report")
    _say(quiet, f"done in {_mmss(time.time() - t_start)}: {out / 'report.html'}")
    return summary


def metric_values(task, scores):
    """{metric: value} from a scorer dict: ScienceQA accuracy in %, MME scores (max 200 per subtask)."""
    if task == "scienceqa":
        return {m: scores.get(m) for m in SQA_METRICS}
    subs = scores.get("subtasks", {})
    return {"perception": scores.get("perception"),
            **{m: (subs[m]["score"] if m in subs else None) for m in MME_SUBTASKS}}


def _data_summary(task, train_ds, test_ds):
    d = {"train_samples": len(train_ds), "test_samples": len(test_ds)}
    if task == "scienceqa":
        d["test_text_only"] = sum(1 for s in test_ds if s.image is None)
        d["test_with_image"] = len(test_ds) - d["test_text_only"]
    else:
        d["test_images"] = len(test_ds) // 2
    d["train_text_only"] = sum(1 for s in train_ds if s.image is None)
    return d


def build_summary(task, results, variants, seeds, preset, name, enc, timings, train_ds, test_ds):
    from eim.commands.params import param_report

    metrics_names = SQA_METRICS if task == "scienceqa" else MME_METRICS
    out = {"task": task, "preset": name, "seeds": seeds, "schedule": asdict(preset), "timings": timings,
           "encoders": {k: (v if isinstance(v, bool) else str(v)) for k, v in enc.items()}, "data": _data_summary(task, train_ds, test_ds),
           "metric_names": list(metrics_names), "variants": {}}
    for v in variants:
        per_seed = [results[(v, s)] for s in range(seeds)]
        vals = [metric_values(task, r["scores"]) for r in per_seed]
        metrics = {}
        for m in metrics_names:
            mean, sd = _mean_std([x[m] for x in vals])
            metrics[m] = {"mean": mean, "std": sd, "per_seed": [x[m] for x in vals]}
        stages = per_seed[0]["stages"]
        base_steps = sum(st["steps"] for st in stages if "base" in st["losses"])
        out["variants"][v] = {
            "label": LABELS.get(v, v),
            "metrics": metrics,
            "extra": ({"n": per_seed[0]["scores"].get("n"), "unparsed": [r["scores"].get("unparsed") for r in per_seed]}
                      if task == "scienceqa" else
                      {"other": [sum(st.get("other", 0) for st in r["scores"].get("subtasks", {}).values())
                                 for r in per_seed]}),
            "loss_base_steps": base_steps,
            "extra_stage_steps": sum(st["steps"] for st in stages if "base" not in st["losses"]),
            "stages": [{"name": st["name"], "losses": st["losses"], "trainable": st["trainable"], "steps": st["steps"],
                        "seconds_mean": _mean_std([r["stages"][i]["seconds"] for r in per_seed])[0],
                        "final": st.get("final", {})}
                       for i, st in enumerate(stages)],
            "train_seconds_mean": _mean_std([r["train_seconds"] for r in per_seed])[0],
            "eval_seconds_mean": _mean_std([r["eval_seconds"] for r in per_seed])[0],
            "params": param_report(recipe_for(v, preset, enc["clip"], enc["lm"], seed=0)),
        }
    base = out["variants"].get("lavin")
    if base:
        for v, d in out["variants"].items():
            d["delta_vs_baseline"] = {m: (None if d["metrics"][m]["mean"] is None or base["metrics"][m]["mean"] is None
                                          else d["metrics"][m]["mean"] - base["metrics"][m]["mean"])
                                      for m in metrics_names}
        if "lavin_eim" in out["variants"]:
            out["verdict"] = _verdict(task, base, out["variants"]["lavin_eim"], seeds)
    return out


def _verdict(task, base, eim, seeds):
    key, unit = ("Avg", "accuracy points") if task == "scienceqa" else ("perception", "MME perception points")
    delta = eim["delta_vs_baseline"][key]
    if delta is None:
        return f"{key} unavailable"
    noise = max(base["metrics"][key]["std"] or 0.0, eim["metrics"][key]["std"] or 0.0)
    if seeds > 1 and abs(delta) <= 2 * noise:
        text = f"LaVIN + EIM vs LaVIN: {delta:+.2f} {unit} ({key}), within 2 std of seed noise (not a clear difference)"
    elif delta > 0:
        text = f"LaVIN + EIM beats LaVIN by {delta:+.2f} {unit} ({key})"
    else:
        text = f"LaVIN + EIM does NOT beat LaVIN ({delta:+.2f} {unit}, {key})"
    return text + ("" if seeds > 1 else " (one seed: run --seeds 3 to tell this from noise)")


# --- report.html ---------------------------------------------------------------------------------

EXAMPLES = 8
_CSS = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}.pos{color:#17702a}.neg{color:#b3261e}"
        ".card{border:1px solid #ddd;padding:8px;display:flex;gap:10px;margin:8px 0}"
        ".card img{image-rendering:pixelated;width:96px;height:96px}.noimg{width:96px;height:96px;background:#eee;"
        "display:flex;align-items:center;justify-content:center;font-size:0.8em;color:#777}"
        ".small{font-size:0.85em;color:#555}pre{white-space:pre-wrap;margin:0}")


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


def _examples(task, test_ds):
    """A few test questions: for ScienceQA both text-only and image problems."""
    idx = list(range(len(test_ds)))
    if task == "scienceqa":
        text = [i for i in idx if test_ds[i].image is None][: EXAMPLES // 2]
        img = [i for i in idx if test_ds[i].image is not None][: EXAMPLES - len(text)]
        return sorted(text + img)
    per = max(1, EXAMPLES // len(MME_SUBTASKS))
    seen, out = {}, []
    for i in idx:
        sub = test_ds[i].meta["subtask"]
        if seen.get(sub, 0) < per:
            seen[sub] = seen.get(sub, 0) + 1
            out.append(i)
    return out


def write_task_report(out, summary, results, test_ds):
    """``out/report.html`` (plots in ``out/plots/``, example images embedded as data URIs)."""
    from eim.report import _img_uri, loss_curves_html

    out = Path(out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    task, seeds, variants = summary["task"], summary["seeds"], list(summary["variants"])
    metric_names, sch, data = summary["metric_names"], summary["schedule"], summary["data"]
    esc = html.escape
    title = ("ScienceQA-format problems (QCM-ALE)" if task == "scienceqa"
             else "MME-format yes/no questions after instruction tuning on LLaVA-format conversations")
    lm = "SmolLM2-135M-Instruct" if sch["lm"] == "smol" else "a tiny LLaMA pretrained on the training text"
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>EIM demo: {task}</title>"
         f"<style>{_CSS}</style></head><body>",
         f"<h1>EIM demo: LaVIN vs LaVIN + EIM on {esc(title)}</h1>",
         f"<p>Preset <b>{esc(summary['preset'])}</b>, {seeds} seed(s), total wall-clock "
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
                     f"{len(MME_SUBTASKS)} MME subtasks")
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
    h.append(f"<h2>{'ScienceQA' if task == 'scienceqa' else 'MME'} ({unit})</h2><table><tr><th>model</th>"
             + "".join(f"<th>{esc(m)}</th>" for m in metric_names) + f"<th>{extra_col}</th></tr>")
    for v in variants:
        d = summary["variants"][v]
        cells = []
        for m in metric_names:
            mm = d["metrics"][m]
            txt = _fmt(task, mm["mean"])
            if seeds > 1 and mm["std"] is not None:
                txt += f" ± {_fmt(task, mm['std'])}"
            delta = d.get("delta_vs_baseline", {}).get(m)
            if v != "lavin" and delta is not None:
                txt += f"<br><span class='{'pos' if delta > 0 else 'neg' if delta < 0 else ''}'>{delta:+.2f}</span>"
            cells.append(f"<td>{txt}</td>")
        ex = d["extra"].get("unparsed", d["extra"].get("other"))
        h.append(f"<tr><td>{esc(d['label'])}</td>{''.join(cells)}<td>{' / '.join(map(str, ex))}</td></tr>")
    h.append("</table>")

    h.append("<h2>Wall-clock</h2><table><tr><th>model</th><th>stages (steps, seconds, final losses)</th>"
             "<th>train s</th><th>eval s</th></tr>")
    for v in variants:
        d = summary["variants"][v]
        st = "<br>".join(f"{s['name']} [{'+'.join(s['losses'])}]: {s['steps']} steps, {s['seconds_mean']:.1f} s"
                         + "".join(f", {k} {x:.3f}" for k, x in s["final"].items() if k.startswith("loss_"))
                         for s in d["stages"])
        h.append(f"<tr><td>{esc(d['label'])}</td><td style='text-align:left'>{st}</td>"
                 f"<td>{d['train_seconds_mean']:.1f}</td><td>{d['eval_seconds_mean']:.1f}</td></tr>")
    h.append("</table><p class='small'>Pipeline: " + ", ".join(f"{k} {x:.1f} s" for k, x in summary["timings"].items())
             + ". Stage times include building the feature banks a stage needs.</p>")

    h.append("<h2>Parameters per segment</h2><table><tr><th>model</th><th>CLIP tower</th><th>CLIP adapters</th>"
             "<th>ST</th><th>LLM base</th><th>LLM adapters</th><th>modality token</th><th>total</th>"
             "<th>trainable</th></tr>")
    for v in variants:
        pr = summary["variants"][v]["params"]
        seg = pr["segments"]
        lp = seg["lm"].get("parts", {})
        h.append(f"<tr><td>{esc(LABELS.get(v, v))}</td><td>{seg['vision']['parts']['tower']:,}</td>"
                 f"<td>{seg['vision']['parts']['tuning']:,}</td><td>{seg['projector']['total']:,}</td>"
                 f"<td>{lp.get('base', seg['lm']['total']):,}</td><td>{lp.get('adapters', 0):,}</td>"
                 f"<td>{lp.get('modality_embedding', 0):,}</td><td>{pr['total']:,}</td>"
                 f"<td>{pr['trainable']:,}</td></tr>")
    h.append("</table>")

    h += loss_curves_html(results, variants, seeds, plots, f"loss_{task}", LABELS)

    h.append("<h2>Examples (test split, seed 0)</h2>")
    preds = {v: _predictions(task, results[(v, 0)]["eval_dir"]) for v in variants}
    for i in _examples(task, test_ds):
        s = test_ds[i]
        pic = (f"<img src='{_img_uri(s.image)}' alt='test image {esc(str(s.image_id))}'>" if s.image
               else "<div class='noimg'>text only</div>")
        key = _example_key(task, s)
        answer = s.meta.get("answer", s.response)
        lines = "".join(f"<div><b>{esc(LABELS.get(v, v))}:</b> {esc(preds[v].get(key, ''))}</div>" for v in variants)
        h.append(f"<div class='card'>{pic}<div><pre>{esc(s.instruction)}</pre>"
                 f"<div class='small'>answer: {esc(str(answer))}</div>{lines}</div></div>")
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h), encoding="utf-8")
