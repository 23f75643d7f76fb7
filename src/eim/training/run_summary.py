"""What a run folder holds, read back (docs/design.md §9): ``eim runs show RUN``.

A run's stages in order, each with its state (``finished``; ``running`` or ``checkpointed`` for a
``.partial`` folder without or with a checkpoint; ``not started`` for the recipe's stages with no
folder yet), the steps it has logged, wall-clock, throughput, its final training losses (each
term's latest value: a term with no items in the last step, loss_IE after a text-only batch, keeps
the value of the last step that had it), the last
and best value of every validation term (lowest for losses, highest for the task metrics), and
where its weights are: the finished stage's ``model.safetensors`` or the running one's checkpoint.
Only reads: safe on a run that is training.
"""

import json
from pathlib import Path
from typing import Any, Optional, Union

from eim.config import build_recipe
from eim.errors import CheckpointError, ConfigError
from eim.training.progress import read_metrics
from eim.training.run_dir import PARTIAL
from eim.training.stage import stage_number


def _identity(root: Path) -> Optional[dict[str, Any]]:
    for f in [root / "run.json", *sorted(root.glob(f"stage-*{PARTIAL}/run.json"))]:
        if f.exists():
            return json.loads(f.read_text())
    return None


def _stage_names(recipe: Optional[dict[str, Any]]) -> list[str]:
    """The recipe's stage names from its recorded form (every stage is listed there)."""
    try:
        return [s.name for s in build_recipe(recipe or {}).stages] if recipe else []
    except (ConfigError, TypeError):
        return []


def best_of(rows: list[dict[str, Any]], key: str) -> tuple[float, int]:
    """``(value, step)`` of the best ``key``: lowest for a loss, highest for a task metric."""
    pts = [(r[key], r["step"]) for r in rows if isinstance(r.get(key), (int, float))]
    return (min if "loss" in key else max)(pts, key=lambda p: (p[0], p[1]) if "loss" in key else (p[0], -p[1]))


def final_losses(recorded: dict[str, Any], train_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``recorded`` (the losses of the stage's last step) with each term that step lacks (no items in
    it) at its last logged value."""
    out = dict(recorded)
    for r in reversed(train_rows):
        out.update({k: v for k, v in r.items() if k.startswith("loss_") and k not in out})
    return out


def stage_summary(d: Path) -> dict[str, Any]:
    """One stage folder, finished or running."""
    rows = read_metrics(d)
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if any(k.startswith("val_") for k in r)]
    out: dict[str, Any] = {"stage": stage_number(d), "name": d.name.removesuffix(PARTIAL).split("-", 2)[2],
                           "folder": str(d), "steps": train_rows[-1]["step"] if train_rows else 0}
    if (d / "stage.json").exists():
        s = json.loads((d / "stage.json").read_text())
        out.update(state="finished", total=s["steps"], seconds=s["seconds"], samples_per_s=s.get("samples_per_s"),
                   tokens_per_s=s.get("tokens_per_s"), final=final_losses(s["final"], train_rows),
                   weights=str(d / "model.safetensors"))
    else:
        ckpt = d / "checkpoint"
        saved = None
        if (ckpt / "step.json").exists():
            saved = json.loads((ckpt / "step.json").read_text())["step"]
        elif (ckpt / "optimizer.json").exists():
            saved = json.loads((ckpt / "optimizer.json").read_text()).get("step")
        last = train_rows[-1] if train_rows else {}
        out.update(state="checkpointed" if ckpt.is_dir() else "running", total=None,
                   seconds=last.get("time"), samples_per_s=last.get("samples_per_s"),
                   tokens_per_s=last.get("tokens_per_s"),
                   final=final_losses({k: v for k, v in last.items() if k.startswith("loss")}, train_rows),
                   weights=str(ckpt) if ckpt.is_dir() else None, checkpoint_step=saved)
    out["validation"] = {}
    for k in sorted({k for r in val_rows for k in r if k.startswith("val_")}):
        best, step = best_of(val_rows, k)
        out["validation"][k] = {"last": next(r[k] for r in reversed(val_rows) if k in r), "best": best,
                                "best_step": step}
    return out


def run_summary(run_dir: Union[str, Path]) -> dict[str, Any]:
    """``{"run", "recipe", "stages": [stage summaries, then the recipe's stages not yet started]}``."""
    root = Path(run_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: no such run folder")
    ident = _identity(root)
    folders = {}
    for d in sorted(root.glob("stage-*"), key=lambda p: (stage_number(p), p.name.endswith(PARTIAL))):
        if d.is_dir() and stage_number(d) >= 0:
            folders.setdefault(stage_number(d), d)  # a finished folder wins over a stale .partial
    if not folders and ident is None:
        raise CheckpointError(f"{root} holds no run (no stage-*/ folder, no run.json): point at the --out "
                              "folder of an `eim train`")
    recipe = (ident or {}).get("recipe") or {}
    stages = [stage_summary(d) for _, d in sorted(folders.items())]
    names = _stage_names(recipe)
    stages += [{"stage": k, "name": n, "state": "not started", "steps": 0} for k, n in enumerate(names)
               if k not in folders]
    return {"run": str(root), "recipe": recipe.get("name"), "stages": sorted(stages, key=lambda s: s["stage"])}


def _clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _num(v: Any, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def format_run(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table (one row per stage, then each stage's weights)."""
    lines = [f"run {summary['run']}" + (f" (recipe {summary['recipe']})" if summary.get("recipe") else "")]
    head = f"{'stage':<18}{'state':<14}{'steps':>11}{'wall-clock':>12}{'samples/s':>11}  {'final losses':<30}best validation"
    lines.append(head)
    for s in summary["stages"]:
        steps = f"{s['steps']}/{s['total']}" if s.get("total") else str(s["steps"])
        final = " ".join(f"{k.removeprefix('loss_')}={v:.4g}" for k, v in (s.get("final") or {}).items()
                         if k != "loss") or "-"
        val = " ".join(f"{k.removeprefix('val_').removeprefix('loss_')}={v['best']:.4g}@{v['best_step']}"
                       for k, v in (s.get("validation") or {}).items()) or "-"
        lines.append(f"{str(s['stage']) + ' ' + s['name']:<18}{s['state']:<14}{steps:>11}{_clock(s.get('seconds')):>12}"
                     f"{_num(s.get('samples_per_s'), '.1f'):>11}  {final:<30}{val}")
    lines.append("")
    for s in summary["stages"]:
        if s.get("weights"):
            at = f" (step {s['checkpoint_step']})" if s.get("checkpoint_step") is not None else ""
            lines.append(f"stage {s['stage']} {s['state']}: {s['weights']}{at}")
    return "\n".join(lines)
