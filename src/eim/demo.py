"""``eim demo``: the paper's ClipCap experiment in miniature, offline, end to end (issue 6).

    eim demo --out eim-demo                 # tiny preset, one seed (~minutes on 2 CPU cores)
    eim demo --out eim-demo --seeds 3       # mean ± std over 3 seeds
    eim demo --out eim-demo --preset smol   # the real SmolLM2-135M as the LLM (54 min measured)

Steps: 1. generate the shapes world (COCO format) · 2. pretrain a small CLIP and a small GPT-2
(or convert SmolLM2) · 3. train ``clipcap`` (baseline), ``clipcap_eim`` (segmented: ST → LM →
base+IE) and ``clipcap_joint`` with the *same number of optimiser steps on the final objective*
(EIM's extra stages are reported as extra cost) · 4. evaluate each on the test split (COCO
metrics) · 5. write ``report.html`` and ``summary.json``. Every step reuses its cache (data,
encoders, banks, finished runs and evaluations) when re-run, and says so.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

VARIANTS = ("clipcap", "clipcap_eim", "clipcap_joint")
LABELS = {"clipcap": "ClipCap (baseline)", "clipcap_eim": "ClipCap + EIM", "clipcap_joint": "ClipCap + joint losses",
          "clipcap_eim_st": "EIM model, +ST only", "clipcap_eim_lm": "EIM model, +LM only",
          "clipcap_eim_ie": "EIM model, +IE only"}


@dataclass
class Preset:
    """Sizes and schedule of a demo preset; every field is a knob for a quick experiment."""

    train: int = 2000  # training images (x5 captions)
    test: int = 200  # test images scored with COCO metrics
    size: int = 64  # image side in pixels
    steps: int = 300  # optimiser steps on the final objective (equal for every variant)
    st_steps: int = 100  # EIM stage 1 (loss_ST), extra cost
    lm_steps: int = 100  # EIM stage 2 (loss_LM), extra cost
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 30
    max_length: int = 32  # caption tokens
    beams: int = 1  # decoding (ClipCap uses 5; 1 keeps the demo fast)
    max_new_tokens: int = 24
    overrides: dict = field(default_factory=dict)  # extra recipe overrides for every variant
    encoders: dict = field(default_factory=dict)  # overrides of eim.pretrain.PRESETS (sizes, steps)


PRESETS = {
    "tiny": Preset(),
    # SmolLM2-135M baseline step (batch 16) measured at 3.2 s on 2 shared cores: 200 final-objective
    # steps per variant keep the whole run near 50 min (estimate; see the README).
    "smol": Preset(steps=200, st_steps=60, lm_steps=60, batch_size=16, lr=2e-4, warmup=20,
                   overrides={"lm.trainable": "full"}),
    "test": Preset(train=24, test=6, size=32, steps=4, st_steps=2, lm_steps=2, batch_size=8, lr=1e-3, warmup=0,
                   max_new_tokens=6,
                   encoders={"vocab_size": 300,
                             "clip": dict(image_size=32, width=32, layers=1, heads=2, text_width=32,
                                          projection_dim=32, steps=5, batch_size=16),
                             "lm": dict(width=32, layers=1, heads=2, steps=5, batch_size=8)}),
}


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
        left = "" if eta is None or not self.finished else f", ~{_mmss(eta)} left"
        print(f"[{_mmss(time.time() - self.t0)}{left}] {text}", flush=True)

    def finish(self, key):
        k = self.kind(key)
        self.seconds[key] = time.time() - self._t.pop(key, time.time())
        self.spent[k] = self.spent.get(k, 0.0) + self.seconds[key]
        self.units[k] = self.units.get(k, 0.0) + self.weights[key]
        self.finished.add(key)


def _mmss(s):
    return f"{int(s // 60)}:{int(s % 60):02d}"


def recipe_for(variant, preset, clip_dir, lm_dir, seed):
    """A shipped recipe pointed at the demo encoders with the preset's schedule."""
    from eim.config import load_recipe

    over = {
        "vision.name_or_path": str(clip_dir), "lm.name_or_path": str(lm_dir),
        "train.batch_size": preset.batch_size, "train.lr": preset.lr, "train.warmup_steps": preset.warmup,
        "train.max_length": preset.max_length, "train.seed": seed, "train.save_every": 10_000,
        "train.log_every": 5, "generation.num_beams": preset.beams,
        "generation.max_new_tokens": preset.max_new_tokens,
    }
    # EIM's loss_ST / loss_LM-only stages get their own (extra-cost) lengths; every other stage
    # optimises the final objective and gets `steps`, so variants compare at equal steps.
    for i, stage in enumerate(load_recipe(variant).stages):
        extra = {"st": preset.st_steps, "lm": preset.lm_steps}
        over[f"stages.{i}.epochs"] = None
        over[f"stages.{i}.steps"] = extra.get("".join(stage.losses), preset.steps)
    over.update(preset.overrides)
    return load_recipe(variant, over)


def run_demo(out, preset="tiny", seeds=1, quiet=False, variants=VARIANTS):
    """Run the whole pipeline into ``out``; returns the summary dict (also ``out/summary.json``)."""
    from eim.commands.train import quiet_transformers, train
    from eim.data import load_dataset
    from eim.evaluation.generate import evaluate_checkpoint
    from eim.io import write_json
    from eim.report import write_report

    quiet_transformers()
    p = PRESETS[preset] if isinstance(preset, str) else preset
    name = preset if isinstance(preset, str) else "custom"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    runs = [(v, s) for s in range(seeds) for v in variants]
    prog = Progress.for_runs(runs, lambda v, s: recipe_for(v, p, "clip", "lm", s), quiet)

    # 1. data ------------------------------------------------------------------------------------
    prog.start("data", "1/5 data: the shapes world in COCO/ScienceQA/MME/LLaVA formats")
    data = ensure_shapes(out / "data", p.train, p.test, p.size, quiet)
    prog.finish("data")

    # 2. encoders --------------------------------------------------------------------------------
    prog.start("encoders", f"2/5 encoders: small CLIP + {'SmolLM2-135M' if name == 'smol' else 'small GPT-2'}")
    from eim.pretrain import cached_encoders

    enc = cached_encoders(data, out / "encoders", preset="smol" if name == "smol" else "tiny", quiet=quiet,
                          overrides=p.encoders or None)
    _say(quiet, f"      {'reused' if enc['reused'] else 'built'} encoders in {out / 'encoders'}")
    prog.finish("encoders")

    train_ds = load_dataset(data / "coco", split="train", mode="train")
    test_ds = load_dataset(data / "coco", split="test", mode="eval")

    # 3-4. train and evaluate ---------------------------------------------------------------------
    results = {}
    for v, s in runs:
        run_dir = out / "runs" / f"{v}-seed{s}"
        recipe = recipe_for(v, p, enc["clip"], enc["lm"], seed=s)
        prog.start(f"train-{v}-{s}", f"3/5 train {v} (seed {s}): "
                   + " -> ".join(f"{st.name}[{'+'.join(st.losses)}] {st.steps} steps" for st in recipe.stages))
        stages = train(recipe, train_ds, run_dir, resume=True, quiet=quiet, banks_dir=out / "banks")
        prog.finish(f"train-{v}-{s}")
        prog.start(f"eval-{v}-{s}", f"4/5 evaluate {v} (seed {s}) on {len(test_ds)} test images")
        t = time.time()
        ev = run_dir / "eval-coco"
        if (ev / "scores.json").exists() and (ev / "results.json").exists():
            scores = json.loads((ev / "scores.json").read_text())
            _say(quiet, f"      reusing {ev}/scores.json")
        else:
            scores = evaluate_checkpoint(run_dir, "coco", test_ds, ev, num_beams=p.beams,
                                         max_new_tokens=p.max_new_tokens, batch_size=32, spice=False, quiet=quiet)
        gen = json.loads((ev / "generation.json").read_text()) if (ev / "generation.json").exists() else {}
        # the runs' own records, so a re-run that reuses them reports the original cost
        results[(v, s)] = {"stages": stages, "scores": scores, "train_seconds": sum(st["seconds"] for st in stages),
                           "eval_seconds": gen.get("generation_seconds", time.time() - t), "run_dir": str(run_dir)}
        prog.finish(f"eval-{v}-{s}")

    # 5. report ----------------------------------------------------------------------------------
    prog.start("report", "5/5 report")
    summary = build_summary(results, variants, seeds, p, name, enc, prog.pipeline_seconds(), test_ds)
    summary["seconds_total"] = round(time.time() - t_start, 1)
    write_report(out, summary, results, test_ds)
    write_json(summary, out / "summary.json")
    prog.finish("report")
    _say(quiet, f"done in {_mmss(time.time() - t_start)}: {out / 'report.html'}")
    return summary


def ensure_shapes(data, train, test, size, quiet=False):
    """Generate the shapes world (seed 0) into ``data`` unless it already holds one made with
    these settings; returns ``data``. Validation gets a quarter of the test size (at least 4)."""
    from eim.data.shapes.writer import write_shapes

    data = Path(data)
    want = {"generator": "eim data shapes", "seed": 0, "size": size, "train": train, "val": max(test // 4, 4),
            "test": test}
    cfg = data / "shapes_config.json"
    if cfg.exists() and json.loads(cfg.read_text()) == want:
        _say(quiet, f"      reusing {data} (same generator settings)")
    else:
        write_shapes(data, train=train, val=want["val"], test=test, seed=0, size=size, overwrite=True)
    return data


METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def build_summary(results, variants, seeds, preset, name, enc, timings, test_ds):
    from eim.commands.params import param_report

    out = {"preset": name, "seeds": seeds, "schedule": preset.__dict__, "timings": timings,
           "encoders": {k: (v if isinstance(v, bool) else str(v)) for k, v in enc.items()}, "variants": {}}
    for v in variants:
        per_seed = [results[(v, s)] for s in range(seeds)]
        metrics = {}
        for m in METRICS:
            vals = [r["scores"].get(m) for r in per_seed]
            mean, sd = _mean_std(vals)
            metrics[m] = {"mean": mean, "std": sd, "per_seed": vals}
        stages = per_seed[0]["stages"]
        final_steps = stages[-1]["steps"]
        extra = [st for st in stages[:-1]]
        recipe = recipe_for(v, preset, enc["clip"], enc["lm"], seed=0)
        out["variants"][v] = {
            "label": LABELS.get(v, v),
            "metrics": metrics,
            "unavailable": per_seed[0]["scores"].get("unavailable", {}),
            "final_objective_steps": final_steps,
            "extra_stage_steps": sum(st["steps"] for st in extra),
            "stages": [{"name": st["name"], "losses": st["losses"], "trainable": st["trainable"], "steps": st["steps"],
                        "seconds_mean": _mean_std([r["stages"][i]["seconds"] for r in per_seed])[0]}
                       for i, st in enumerate(stages)],
            "train_seconds_mean": _mean_std([r["train_seconds"] for r in per_seed])[0],
            "eval_seconds_mean": _mean_std([r["eval_seconds"] for r in per_seed])[0],
            "params": param_report(recipe),
        }
    base = out["variants"].get("clipcap")
    if base:
        for v, d in out["variants"].items():
            d["delta_vs_baseline"] = {m: (None if d["metrics"][m]["mean"] is None or base["metrics"][m]["mean"] is None
                                          else d["metrics"][m]["mean"] - base["metrics"][m]["mean"]) for m in METRICS}
        eim = out["variants"].get("clipcap_eim")
        if eim:
            b4, sd_b, sd_e = (eim["delta_vs_baseline"]["Bleu_4"], base["metrics"]["Bleu_4"]["std"],
                              eim["metrics"]["Bleu_4"]["std"])
            noise = max(sd_b or 0.0, sd_e or 0.0)
            if b4 is None:
                verdict = "BLEU-4 unavailable"
            elif seeds > 1 and abs(b4) <= 2 * noise:
                verdict = f"EIM vs baseline BLEU-4 {b4 * 100:+.2f} points: within 2 std of seed noise (not a clear difference)"
            elif b4 > 0:
                verdict = f"EIM beats the baseline on BLEU-4 by {b4 * 100:+.2f} points"
            else:
                verdict = f"EIM does NOT beat the baseline on BLEU-4 ({b4 * 100:+.2f} points)"
            out["verdict"] = verdict + ("" if seeds > 1 else " (one seed: run --seeds 3 to tell this from noise)")
    return out


def _say(quiet, msg):
    if not quiet:
        print(msg, flush=True)
