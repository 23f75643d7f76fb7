"""The demo pipeline every ``eim demo --task`` runs (docs/harness.md): one comparison loop.

    1/5 data      the shapes world, generated once (:func:`ensure_shapes`)
    2/5 encoders  a small pretrained CLIP and LLM (:mod:`eim_harness.encoders`), cached
    3/5 train     each (variant, seed), resumable (finished stages are reused)
    4/5 evaluate  each run on the task's test split, reused while fresh (:func:`eim_harness.evaluate.eval_fresh`)
    5/5 report    ``summary.json`` (:func:`build_summary`) and ``report.html``

A task (:class:`eim_harness.task.Task`; :mod:`eim_harness.coco`: ClipCap; :mod:`eim_harness.lavin`:
LaVIN on ScienceQA / MME; :mod:`eim_harness.llava`: LLaVA-1.5) says what differs: its presets,
recipes, data, evaluation and report.
"""

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from eim.api import param_report, quiet_transformers, train
from eim_harness.report import items_only
from eim_harness.shapes.writer import ensure_shapes as generate_shapes
from eim.evaluation.intervals import paired_interval
from eim.io import write_json


class Progress:
    """One line per pipeline step, with the elapsed time and an estimate of what is left.

    Steps are keyed ``kind-…`` (``train-clipcap-0``, ``eval-clipcap-0``) and carry a weight in the
    kind's own unit (optimiser steps for ``train``, test items for ``eval``). The estimate is
    ``remaining weight × measured seconds per unit`` for each kind, so it only appears once every
    kind still to come has been measured: a guess from a different preset's proportions would be
    off by minutes (SmolLM2 spends its time in training, the tiny preset in pretraining).
    """

    def __init__(self, weights, quiet=False):
        self.weights, self.quiet, self.t0 = dict(weights), quiet, time.time()
        self.spent, self.units, self.finished, self._t = {}, {}, set(), {}
        self.seconds = {}  # wall-clock of each finished step, by key

    @classmethod
    def for_runs(cls, runs, make_recipe, quiet=False):
        """The demo pipeline's steps for ``runs`` = [(variant, seed)]: data, encoders, a train and an
        eval step per run (train weighted by its recipe's optimiser steps; every evaluation scores
        the same test split), report."""
        weights = {"data": 1, "encoders": 1, "report": 1,
                   **{f"train-{v}-{s}": sum(st.steps for st in make_recipe(v, s).stages) for v, s in runs},
                   **{f"eval-{v}-{s}": 1 for v, s in runs}}
        return cls(weights, quiet)

    def pipeline_seconds(self):
        """Wall-clock of the shared steps (data, encoders), for the summary's ``timings``."""
        return {k: self.seconds[k] for k in ("data", "encoders") if k in self.seconds}

    @staticmethod
    def kind(key):
        return key.split("-", 1)[0]

    def eta(self):
        """Seconds left, or None while a kind still to come has not been measured yet."""
        left = 0.0
        for key, w in self.weights.items():
            if key in self.finished or self.kind(key) not in ("train", "eval"):
                continue
            k = self.kind(key)
            if not self.units.get(k):
                return None
            left += w * self.spent[k] / self.units[k]
        return left

    def start(self, key, text):
        self._t[key] = time.time()
        if self.quiet:
            return
        eta = self.eta()
        left = "" if eta is None or not self.finished else f", ~{mmss(eta)} left"
        print(f"[{mmss(time.time() - self.t0)}{left}] {text}", flush=True)

    def finish(self, key):
        k = self.kind(key)
        self.seconds[key] = time.time() - self._t.pop(key, time.time())
        self.spent[k] = self.spent.get(k, 0.0) + self.seconds[key]
        self.units[k] = self.units.get(k, 0.0) + self.weights[key]
        self.finished.add(key)


def mmss(s):
    return f"{int(s // 60)}:{int(s % 60):02d}"


def say(quiet, msg):
    if not quiet:
        print(msg, flush=True)


def mean_std(xs):
    """(mean, sample std) of the non-None values; (None, None) when there are none."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def ensure_shapes(data, train, test, size, quiet=False):
    """Generate the shapes world (seed 0) into ``data`` unless it already holds one made with
    these settings; returns ``data``. The validation split is as large as the test split: it is
    where stage learning rates and other choices are made (docs/design.md §3), never on the test split."""
    data = Path(data)
    if not generate_shapes(data, train, test, test, size):
        say(quiet, f"      reusing {data} (same generator and settings)")
    return data


def train_run(recipe, data, run_dir, **kwargs):
    """:func:`eim.train` on a task's training data: one dataset, or ``{name: dataset}`` for a recipe
    whose stages name their data (LLaVA)."""
    if isinstance(data, dict):
        return train(recipe, None, run_dir, datasets=data, **kwargs)
    return train(recipe, data, run_dir, **kwargs)


def size(data):
    """Samples in a dataset, or in all of ``{name: dataset}``."""
    return sum(map(len, data.values())) if isinstance(data, dict) else len(data)


def eval_dir(task, folder, metric):
    """The evaluation folder ``metric`` is computed from (a task with several benchmarks keeps one each)."""
    return folder[task.metric_sources[metric]] if isinstance(folder, dict) else folder


def run_comparison(task, out, preset="tiny", seeds=1, quiet=False, variants=None, callbacks=()):
    """Run ``task``'s pipeline into ``out``; returns the summary dict (also ``out/summary.json``).

    preset: a name in ``task.presets`` or a preset object. variants: recipe names (default the
    task's). callbacks: passed to the trainer, ``f(trainer, stage_index, step)`` after each step.
    """
    quiet_transformers()
    p = task.presets[preset] if isinstance(preset, str) else preset
    name = preset if isinstance(preset, str) else "custom"
    variants = tuple(variants or task.variants)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    runs = [(v, s) for s in range(seeds) for v in variants]
    prog = Progress.for_runs(runs, lambda v, s: task.recipe(v, p, "clip", "lm", s), quiet)

    prog.start("data", f"1/5 data: {task.data_text}")
    data = ensure_shapes(out / "data", *task.world(p), quiet)
    prog.finish("data")

    prog.start("encoders", f"2/5 encoders: small CLIP + {task.lm_text(p, name)}")
    enc = task.encoders(out, data, p, name, quiet)
    say(quiet, f"      {'reused' if enc['reused'] else 'built'} encoders: {enc['clip']}, {enc['lm']}")
    prog.finish("encoders")

    train_ds, test_ds, p = task.datasets(data, p, enc, quiet)
    results = {}
    for v, s in runs:
        run_dir = out / "runs" / task.run_name(v, s)
        recipe = task.recipe(v, p, enc["clip"], enc["lm"], s)
        prog.start(f"train-{v}-{s}", f"3/5 train {v} (seed {s}) on {size(train_ds)} training samples: "
                   + " -> ".join(f"{st.name}[{'+'.join(st.losses)}] {st.steps} steps" for st in recipe.stages))
        # resume: reuse a run already there; overwrite: replace one made with another recipe
        stages = train_run(recipe, train_ds, run_dir, resume=True, overwrite=True, quiet=quiet,
                           banks_dir=out / "banks", callbacks=callbacks)
        prog.finish(f"train-{v}-{s}")
        prog.start(f"eval-{v}-{s}", f"4/5 evaluate {v} (seed {s}) on {size(test_ds)} {task.test_text}")
        scores, ev, gen_seconds = task.evaluate(run_dir, test_ds, p, quiet=quiet)
        # the runs' own records, so a re-run that reuses them reports the original cost
        results[(v, s)] = {"stages": stages, "scores": scores, "train_seconds": sum(st["seconds"] for st in stages),
                           "eval_seconds": gen_seconds, "run_dir": str(run_dir),
                           "eval_dir": {k: str(x) for k, x in ev.items()} if isinstance(ev, dict) else str(ev)}
        prog.finish(f"eval-{v}-{s}")

    prog.start("report", "5/5 report")
    summary = build_summary(task, results, variants, seeds, p, name, enc, prog.pipeline_seconds(), train_ds, test_ds)
    summary["seconds_total"] = round(time.time() - t_start, 1)
    task.report(out, summary, results, test_ds)
    write_json(summary, out / "summary.json")
    prog.finish("report")
    say(quiet, f"done in {mmss(time.time() - t_start)}: {out / 'report.html'}")
    return summary


def seed_stats(values):
    """``{"mean", "std", "per_seed"}`` of one metric's per-seed values (None where unavailable)."""
    mean, sd = mean_std(values)
    return {"mean": mean, "std": sd, "per_seed": values}


def stage_costs(per_seed, keys):
    """Each stage's ``keys`` (from the first seed), its mean seconds over seeds and its final losses."""
    return [{**{k: st[k] for k in keys}, "seconds_mean": mean_std([r["stages"][i]["seconds"] for r in per_seed])[0],
             "final": st.get("final", {})} for i, st in enumerate(per_seed[0]["stages"])]


def build_summary(task, results, variants, seeds, preset, name, enc, timings, train_ds, test_ds):
    """``summary.json``: per variant each metric's per-seed values, mean and std, the stages and
    their cost, parameters; differences to the task's baseline, ``comparisons`` (paired 95%
    intervals over seeds and test items, :func:`comparisons`) and a verdict."""
    out = {"task": task.name, "preset": name, "seeds": seeds, "schedule": asdict(preset), "timings": timings,
           "encoders": {k: (v if isinstance(v, bool) else str(v)) for k, v in enc.items()},
           "data": task.data_summary(train_ds, test_ds), "metric_names": list(task.metrics), "baseline": task.baseline, "variants": {}}
    for v in variants:
        per_seed = [results[(v, s)] for s in range(seeds)]
        vals = [task.metric_values(r["scores"]) for r in per_seed]
        stages = per_seed[0]["stages"]
        out["variants"][v] = {
            "label": task.labels.get(v, v),
            "metrics": {m: seed_stats([x[m] for x in vals]) for m in task.metrics},
            **task.extra_summary([r["scores"] for r in per_seed]),
            "loss_base_steps": sum(st["steps"] for st in stages if "base" in st["losses"]),
            "extra_stage_steps": sum(st["steps"] for st in stages if "base" not in st["losses"]),
            "stages": stage_costs(per_seed, ("name", "losses", "trainable", "steps")),
            "train_seconds_mean": mean_std([r["train_seconds"] for r in per_seed])[0],
            "eval_seconds_mean": mean_std([r["eval_seconds"] for r in per_seed])[0],
            "params": param_report(task.recipe(v, preset, enc["clip"], enc["lm"], seed=0)),
        }
    base = out["variants"].get(task.baseline)
    if base:
        for d in out["variants"].values():
            d["delta_vs_baseline"] = {m: (None if d["metrics"][m]["mean"] is None or base["metrics"][m]["mean"] is None
                                          else d["metrics"][m]["mean"] - base["metrics"][m]["mean"])
                                      for m in task.metrics}
        out["comparisons"] = comparisons(task, results, variants, seeds)
        if task.treatment in out["variants"]:
            out["verdict"] = verdict(task, base, out["variants"][task.treatment], out["comparisons"])
    return out


def paired_comparison(variant_evals, reference_evals, metric_fn, scale=1.0, n_boot=2000):
    """Paired difference with its 95% interval (:func:`eim.evaluation.intervals.paired_interval`)
    between two lists of evaluation folders (one per seed, paired by position) that hold
    ``per_image.json``; items are matched by id. Returns ``{"diff", "ci95", "se", "se_seeds",
    "se_items", "df", "n_seeds", "n_images", "n_boot"}``."""
    def load(folder):
        per = json.loads((Path(folder) / "per_image.json").read_text())
        return dict(zip(map(str, per["ids"]), per["stats"]))

    a, b = [load(f) for f in variant_evals], [load(f) for f in reference_evals]
    ids = [i for i in a[0] if all(i in x for x in a + b)]
    c = paired_interval([[x[i] for i in ids] for x in a], [[x[i] for i in ids] for x in b], metric_fn,
                         n_boot=n_boot, scale=scale)
    c["n_images"] = c.pop("n_items")
    return c


def compare_pairs(task, pairs, metrics, evals, n_boot=2000, **extra):
    """``comparisons`` entries: for each (variant, reference) pair and metric, the paired difference
    on the test split with its interval (:func:`paired_comparison`); ``evals[v]`` lists v's
    evaluation folders, one per seed; ``extra`` keys lead each entry."""
    out = []
    for v, ref in pairs:
        for m in metrics:
            fn, scale = task.interval_metrics[m]
            c = paired_comparison([eval_dir(task, e, m) for e in evals[v]], [eval_dir(task, e, m) for e in evals[ref]],
                                  fn, scale, n_boot=n_boot)
            out.append({**extra, "variant": v, "reference": ref, "metric": m, "split": "test", **c})
    return out


def comparisons(task, results, variants, seeds):
    """Every variant against the task's baseline on each metric the task has intervals for."""
    if task.baseline not in variants:
        return []
    evals = {v: [results[(v, s)]["eval_dir"] for s in range(seeds)] for v in variants}
    return compare_pairs(task, [(v, task.baseline) for v in variants if v != task.baseline], task.compared, evals)


def verdict(task, base, eim, comps):
    """One sentence: the treatment's difference on the task's key metric with its 95% interval."""
    key, unit = task.key_metric, task.key_unit
    c = next((c for c in comps if c["metric"] == key and c["variant"] == task.treatment), None)
    delta = eim["delta_vs_baseline"][key]
    if delta is None:
        return f"{key} unavailable"
    if c is None:
        return f"{eim['label']} vs {base['label']}: {delta * task.key_scale:+.2f} {unit} ({key}), no interval"
    lo, hi = c["ci95"]
    what = (f"{eim['label']} − {base['label']}: {c['diff']:+.2f} {unit} ({key}), 95% interval [{lo:+.2f}, {hi:+.2f}] "
            f"over {c['n_seeds']} seed{'s' if c['n_seeds'] != 1 else ''} and {c['n_images']} test items")
    if items_only(c):  # the interval is over the test items only: it cannot call a difference clear
        return f"{what}: items only (one seed: training noise not counted; --seeds 3 or more to judge)"
    if lo > 0:
        return f"{what}: {eim['label']} is better"
    if hi < 0:
        return f"{what}: {eim['label']} is worse"
    return f"{what}: no clear difference"
