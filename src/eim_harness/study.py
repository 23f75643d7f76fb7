"""``eim study SPEC --out DIR``: the paper's ablations as reproducible studies with intervals
(docs/evidence.md).

A spec (``src/eim_harness/studies/<name>.yaml``, or any YAML path) names the task, the conditions
(:mod:`eim_harness.worlds`), the variants (a recipe and overrides each), the reference, the metrics
compared, the seeds, the split hyper-parameters are chosen on, and optional sweeps. For each
condition the runner

1. generates the world and pretrains its encoders once (cached, shared by every run);
2. runs each sweep: every grid point of each swept variant, seed 0, scored on the selection split
   (``val``); the best point joins the variant's overrides. The test split is never read here;
3. trains every variant x seed (resumable: finished stages and evaluations are reused) and scores
   it once on the test split, keeping per-item statistics;
4. compares: paired differences over the same seeds and test items with 95% intervals (t over
   seeds, bootstrap over items; docs/design.md §11), each variant against the reference (and,
   with ``compare: previous``, against the variant listed before it).

``DIR/study.json`` holds per condition and variant each metric's per-seed values, mean and std,
each stage's cost, the selection record and the ``comparisons``; plus what reproduces it
(command, package versions, seeds, data fingerprints). ``DIR/report.html`` shows it.
"""

import hashlib
import itertools
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import accelerate
import torch
import transformers
import yaml

from eim import __version__
from eim.api import quiet_transformers
from eim.banks import dataset_fingerprint
from eim.config import recipe_delta
from eim.digests import file_digest, folder_digest
from eim_harness.pipeline import compare_pairs, mean_std, say, seed_stats, stage_costs, train_run
from eim_harness.registry import TASKS
from eim_harness.study_report import write_study_report
from eim_harness.worlds import ensure_world, world
from eim.errors import ConfigError
from eim.io import write_json

SPEC_DIR = Path(__file__).resolve().parent / "studies"
SELECTABLE = ("val",)  # never "test": it is read once, for the final table; the studies score no other split


@dataclass
class Variant:
    name: str
    recipe: str
    label: str = ""
    overrides: dict = field(default_factory=dict)


@dataclass
class Sweep:
    variants: list
    grid: dict  # override key -> candidate values
    metric: str  # chosen by the largest value on the selection split


@dataclass
class Spec:
    name: str
    title: str
    task: str
    variants: list
    reference: str
    conditions: list = field(default_factory=lambda: ["transfer", "indomain"])
    metrics: list = field(default_factory=lambda: ["Bleu_4", "CIDEr"])  # compared with intervals
    table: list = field(default_factory=lambda: ["Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"])
    seeds: int = 3
    select_on: str = "val"
    compare: str = "reference"  # reference: each variant vs the reference | previous: also vs the one before
    sweeps: list = field(default_factory=list)
    path: str = ""


def spec_names():
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_spec(name_or_path):
    """A :class:`Spec` from a shipped name or a YAML path; errors name the key."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SPEC_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown study {name_or_path!r} (shipped: {', '.join(spec_names())}; or a YAML path)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the study spec: {e}") from None
    known = {f for f in Spec.__dataclass_fields__ if f != "path"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(known))})")
    for key in ("name", "title", "task", "variants", "reference"):
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}")
    try:
        data["variants"] = [Variant(**v) for v in data["variants"]]
        data["sweeps"] = [Sweep(**s) for s in data.get("sweeps", [])]
    except TypeError as e:
        raise ConfigError(f"{path}: bad variant or sweep: {e}") from None
    spec = Spec(**data, path=str(path))
    names = [v.name for v in spec.variants]
    if spec.task not in TASKS:
        raise ConfigError(f"{path}: task {spec.task!r} is not a study task (allowed: {', '.join(TASKS)})")
    if len(set(names)) != len(names) or spec.reference not in names:
        raise ConfigError(f"{path}: variant names must be unique and include the reference {spec.reference!r}")
    for s in spec.sweeps:
        bad = [v for v in s.variants if v not in names]
        if bad:
            raise ConfigError(f"{path}: sweep names unknown variant(s) {bad}")
    if spec.compare not in ("reference", "previous"):
        raise ConfigError(f"{path}: compare must be 'reference' or 'previous', got {spec.compare!r}")
    return spec


def check_selection_split(split):
    if split == "test":
        raise ConfigError("selecting hyper-parameters on the test split is refused: choose them on 'val' "
                          "(the test split is read once, for the final table)")
    if split not in SELECTABLE:
        raise ConfigError(f"--select-on {split!r}: allowed {', '.join(SELECTABLE)}")


def _key(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _versions():
    return {"eim": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version()}


class Condition:
    """One condition's data, encoders and runs (a helper of :func:`run_study`); what is task specific
    comes from the task (:class:`eim_harness.task.Task`: ``study_datasets``, ``study_encoders``,
    ``study_preset``, ``recipe``, ``evaluate``, ``interval_metrics``)."""

    def __init__(self, spec, cond, preset, p, cache, quiet):
        self.task, self.cond, self.preset, self.p, self.quiet = TASKS[spec.task], cond, preset, p, quiet
        self.world = world(preset, cond)
        self.data = ensure_world(cache, self.world, quiet)
        self.enc = self.task.study_encoders(Path(cache), self.data, self.world, preset, p, quiet)
        # runs are reused only with the very weights they were trained on: encoders pretrained
        # again at the same path (new data, a newer generator) give new run folders
        self.weights = {k: folder_digest(self.enc[k]) for k in ("clip", "lm")}
        self.train_ds, self.splits = self.task.study_datasets(self.data)
        self.p = self.task.study_preset(self.p, self.enc, self.train_ds, self.splits)  # LaVIN: text lengths
        # ... and only with the very data: a world's files rewritten (a newer generator that keeps
        # the encoders' corpus) give new run folders too
        self.train_fp = _fingerprint(self.train_ds)
        self.data_key = _key(self.train_fp)
        self.runs = Path(cache) / "runs" / self.world.key
        self.banks = Path(cache) / "banks" / self.world.key

    def run(self, v, overrides, seed):
        """Train (or reuse) one run; returns (run_dir, stage summaries)."""
        recipe = self.task.recipe(v.recipe, self.p, self.enc["clip"], self.enc["lm"], seed, extra=overrides)
        # the folder is named by what decides the run: the recipe's non-default fields (so a field
        # added later with a default keeps every cached run), its seed aside
        built = recipe_delta(recipe)
        built["train"] = {k: x for k, x in built.get("train", {}).items() if k != "seed"}
        key = _key(built, self.p.max_new_tokens, self.p.beams, self.weights, self.data_key)
        run_dir = self.runs / f"{v.name}-{key}" / f"seed{seed}"
        say(self.quiet, f"[{self.cond}] {v.name} seed {seed}: "
            + " -> ".join(f"{st.name}[{'+'.join(st.losses)}] {st.steps}" for st in recipe.stages))
        stages = train_run(recipe, self.train_ds, run_dir, resume=True, quiet=True, banks_dir=self.banks)
        return run_dir, stages

    def evaluate(self, run_dir, split, meteor):
        """(scores with the task's flat metrics added, e.g. MME's accuracies, folder, seconds)."""
        scores, ev, seconds = self.task.evaluate(run_dir, self.splits[split], self.p, split=split, quiet=True,
                                           meteor=meteor)
        return {**scores, **self.task.metric_values(scores)}, ev, seconds


def run_study(spec, out, preset="tiny", seeds=None, select_on=None, conditions=None, cache=None, quiet=False,
              command=None, n_boot=2000):
    """Run ``spec`` (a name, a path or a :class:`Spec`) into ``out``; returns the study dict."""
    quiet_transformers()
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    select_on = select_on or spec.select_on
    check_selection_split(select_on)
    seeds = seeds or spec.seeds
    conditions = conditions or spec.conditions
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache else out / "cache"
    task = TASKS[spec.task]
    schedules = task.schedules
    if preset not in schedules:
        raise ConfigError(f"study {spec.name}: task {spec.task} has no {preset!r} preset (allowed: {', '.join(schedules)})")
    p = schedules[preset]
    t0 = time.time()
    study = {"spec": spec.name, "title": spec.title, "preset": preset, "seeds": seeds, "spec_seeds": spec.seeds,
             "select_on": select_on, "reference": spec.reference, "metrics": spec.metrics, "table": spec.table,
             "conditions": {},
             "reproduce": {"command": command, "spec_file": spec.path, "spec_sha256": file_digest(spec.path)
                           if spec.path else None, "versions": _versions(), "seeds": list(range(seeds)),
                           "schedule": asdict(p)}}
    for cond in conditions:
        c = Condition(spec, cond, preset, p, cache, quiet)
        if spec.sweeps and select_on not in c.splits:
            raise ConfigError(f"study {spec.name}: task {spec.task} has no {select_on!r} split to choose on "
                              f"(it has {', '.join(c.splits)}); drop the sweeps")
        chosen, selection = {}, []
        for sw in spec.sweeps:  # 2. selection on the validation split, seed 0
            keys = list(sw.grid)
            for vname in sw.variants:
                v = next(x for x in spec.variants if x.name == vname)
                tried = []
                for values in itertools.product(*(sw.grid[k] for k in keys)):
                    point = dict(zip(keys, values))
                    run_dir, _ = c.run(v, {**v.overrides, **chosen.get(v.name, {}), **point}, 0)
                    scores, _, _ = c.evaluate(run_dir, select_on, meteor=False)
                    tried.append({"point": point, "value": scores[sw.metric] * task.key_scale})  # points
                best = max(tried, key=lambda t: t["value"])
                chosen.setdefault(v.name, {}).update(best["point"])
                selection.append({"variant": v.name, "split": select_on, "metric": sw.metric, "unit": "points",
                                  "tried": tried, "chosen": best["point"]})
        variants, evals = {}, {}
        for v in spec.variants:  # 3. every variant x seed, scored once on the test split
            overrides = {**v.overrides, **chosen.get(v.name, {})}
            per_seed, evals[v.name] = [], []
            for s in range(seeds):
                run_dir, stages = c.run(v, overrides, s)
                scores, ev, gen_s = c.evaluate(run_dir, "test", meteor=True)
                per_seed.append({"scores": scores, "stages": stages, "eval_seconds": gen_s, "run_dir": str(run_dir)})
                evals[v.name].append(ev)
            variants[v.name] = _variant_summary(v, overrides, per_seed, spec, task)
        study["conditions"][cond] = {
            "world": asdict(c.world), "encoders": {k: str(x) for k, x in c.enc.items()},
            "data": {"train": c.train_fp, **{s: _fingerprint(d) for s, d in c.splits.items()}},
            "selection": selection, "variants": variants,
            "comparisons": _comparisons(spec, task, evals, cond, n_boot)}
        write_json(study, out / "study.json")  # after each condition: a long study shows progress
    study["seconds"] = round(time.time() - t0, 1)
    write_json(study, out / "study.json")
    write_study_report(out, study)
    return study


def _fingerprint(data):
    """A dataset's fingerprint, or one per dataset of ``{name: dataset}``."""
    return {n: dataset_fingerprint(d) for n, d in data.items()} if isinstance(data, dict) else dataset_fingerprint(data)


def _variant_summary(v, overrides, per_seed, spec, task):
    scale = task.key_scale
    metrics = {m: seed_stats([None if r["scores"].get(m) is None else r["scores"][m] * scale for r in per_seed])
               for m in dict.fromkeys(spec.table + spec.metrics)}
    stages = stage_costs(per_seed, ("name", "losses", "steps"))
    return {"label": v.label or v.name, "recipe": v.recipe, "overrides": overrides, "metrics": metrics,
            "stages": stages, "train_seconds_mean": sum(st["seconds_mean"] for st in stages),
            "eval_seconds_mean": mean_std([r["eval_seconds"] for r in per_seed])[0],
            "run_dirs": [r["run_dir"] for r in per_seed]}


def _comparisons(spec, task, evals, cond, n_boot):
    names = [v.name for v in spec.variants]
    pairs = [(v, spec.reference) for v in names if v != spec.reference]
    if spec.compare == "previous":
        pairs += [(b, a) for a, b in zip(names, names[1:]) if a != spec.reference]
    return compare_pairs(task, pairs, spec.metrics, evals, n_boot, condition=cond)


__all__ = ["Spec", "Sweep", "Variant", "check_selection_split", "load_spec", "run_study", "spec_names"]
