"""Checkpoints: the tuned tensors of a model (safetensors), optimizer state (safetensors + JSON).

A stage's ``model.safetensors`` holds the parameters that stage trained (docs/design.md §8); a run's
model is the recipe's pretrained models with every finished stage's file loaded over them in stage
order (:func:`find_checkpoint`, :func:`load_checkpoint`), so a later stage's weights win. Files
written before this rule held every parameter any stage may train; composed the same way they give
the same model. ``RUN_DIR/recipe.json`` records the recipe, so a checkpoint folder is self-describing.
"""

import os
from dataclasses import replace
from pathlib import Path
from typing import Union

import torch

from eim.config import build_recipe
from eim.errors import CheckpointError
from eim.io import load_tensors, read_json, save_tensors, write_json
from eim.training.stage import stage_number

LOSS_PREFIX = "loss."  # a loss's own trained parameters in a mid-stage checkpoint (e.g. a linear loss_IE head)
ORIGIN = "origin.json"  # RUN/origin.json: the folder `eim train` ran in, for relative model paths (not identity)


def tunable_state(model):
    """``{name: tensor}`` of every parameter any segment's tuning method can train."""
    ids = {id(p) for seg in ("vision", "projector", "lm") for p in model.segment_tunable(seg)}
    return {n: p for n, p in model.named_parameters() if id(p) in ids}


def load_model_weights(model, path, losses=None):
    """Load a model checkpoint into ``model``; every tensor must match a parameter by name and shape.
    ``losses``: ``{name: loss module}`` whose own parameters a mid-stage checkpoint holds under
    ``loss.<name>.<parameter>``."""
    tensors, meta = load_tensors(path)
    params = dict(model.named_parameters())
    for name, m in (losses or {}).items():
        params.update({f"{LOSS_PREFIX}{name}.{n}": p for n, p in m.named_parameters()})
    for name, t in tensors.items():
        if name not in params:
            raise CheckpointError(f"{path}: tensor {name!r} has no parameter in this model — the checkpoint "
                                  "belongs to a different recipe (check recipe.json beside it)")
        if params[name].shape != t.shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(t.shape)}, the model expects "
                                  f"{tuple(params[name].shape)}")
        with torch.no_grad():
            params[name].copy_(t)
    return meta


def save_optimizer(optimizer, path_prefix, extra_state):
    """Optimizer tensors to ``<prefix>.safetensors``; scalars, groups and ``extra_state`` to JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    for k, v in extra_state.get("tensors", {}).items():
        tensors[f"extra.{k}"] = v
    save_tensors(tensors, f"{path_prefix}.safetensors")
    write_json({"param_groups": sd["param_groups"], "scalars": scalars,
                **{k: v for k, v in extra_state.items() if k != "tensors"}}, f"{path_prefix}.json")


def load_optimizer(optimizer, path_prefix):
    """Restore what :func:`save_optimizer` wrote; returns the extra state (with ``tensors``)."""
    tensors, _ = load_tensors(f"{path_prefix}.safetensors")
    meta = read_json(f"{path_prefix}.json")
    state, extra_t = {}, {}
    for key, v in tensors.items():
        a, b = key.split(".", 1)
        if a == "extra":
            extra_t[b] = v
        else:
            state.setdefault(int(a), {})[b] = v
    for key, v in meta.pop("scalars").items():
        a, b = key.split(".", 1)
        state.setdefault(int(a), {})[b] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    meta["tensors"] = extra_t
    return meta


def rng_state():
    """``{"rng": CPU generator state[, "cuda_rng": this device's]}``: what dropout draws from."""
    out = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda_rng"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(tensors):
    """Restore what :func:`rng_state` returned (the CUDA state only where there is CUDA)."""
    torch.set_rng_state(tensors["rng"])
    if "cuda_rng" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda_rng"])


def save_rng(folder, rank):
    save_tensors(rng_state(), Path(folder) / f"rng-{rank}.safetensors")


def load_rng(folder, rank):
    """Restore ``folder/rng-<rank>.safetensors`` when there is one (stages written before it was
    saved have none)."""
    path = Path(folder) / f"rng-{rank}.safetensors"
    if path.exists():
        set_rng_state(load_tensors(path)[0])


def load_recipe_json(run_dir):
    """The recipe of the run at ``run_dir``, its relative model paths resolved (:func:`resolve_model_paths`)."""
    run_dir = Path(run_dir)
    return resolve_model_paths(build_recipe(read_json(run_dir / "recipe.json")), run_dir)


def write_origin(run_dir, recipe_fields):
    """Record the folder the run is trained from (``RUN/origin.json``), where its recipe's relative model
    paths resolve, and which of them were folders there; not part of the run's identity (docs/design.md
    §8). ``recipe_fields``: the run's recipe as a dict (its non-default fields will do)."""
    paths = {seg: (recipe_fields.get(seg) or {}).get("name_or_path") for seg in ("vision", "lm")}
    write_json({"cwd": os.getcwd(), "folders": sorted(s for s, n in paths.items() if n and os.path.isdir(n))},
               Path(run_dir) / ORIGIN)


def resolve_model_paths(recipe, run_dir):
    """``recipe`` with a relative ``vision`` / ``lm`` ``name_or_path`` that does not exist from here made
    absolute: against the folder the run was trained from (``origin.json``), else the run folder's
    parents. A relative path found nowhere is a :class:`CheckpointError` naming it and the fix, unless
    it may be a hub id (``owner/name``, not a folder when the run was trained). The run's files are not
    changed."""
    run_dir = Path(run_dir).resolve()
    origin = read_json(run_dir / ORIGIN) if (run_dir / ORIGIN).exists() else None
    bases = ([Path(origin["cwd"])] if origin else []) + list(run_dir.parents)
    changes = {}  # segment -> its config with the resolved path
    for seg in ("vision", "lm"):
        name = getattr(recipe, seg).name_or_path
        if not name or os.path.isabs(name) or os.path.exists(name):
            continue
        found = next((b / name for b in bases if (b / name).exists()), None)
        if found is not None:
            changes[seg] = replace(getattr(recipe, seg), name_or_path=str(found))
        elif (seg in origin.get("folders", ())) if origin else not _hub_id(name):
            raise CheckpointError(
                f"{run_dir / 'recipe.json'}: {seg}.name_or_path {name!r} is a relative path that exists neither from "
                f"{os.getcwd()} nor from " + (f"{bases[0]}, where the run was trained" if origin
                                              else "the run folder's parents") +
                f"; run the command from the folder the run was trained in, or put the model back at {name}")
    return replace(recipe, **changes) if changes else recipe


def _hub_id(name):
    parts = str(name).split("/")
    return len(parts) <= 2 and not str(name).startswith(".") and all(parts)


def find_checkpoint(path: Union[str, os.PathLike]):
    """Resolve CHECKPOINT given to ``eim caption`` / ``eim eval`` / ``eim export`` / ``eim chat``: a run
    folder (its finished stages), a stage folder or a stage's ``model.safetensors`` (that stage and the
    run's finished stages before it). Returns ``(recipe, files)``: the stage files to load over the
    pretrained models, in stage order (:func:`load_checkpoint`)."""
    path = Path(path)
    if path.is_file():
        weights, stage_dir = path, path.parent
    elif (path / "model.safetensors").exists():
        weights, stage_dir = path / "model.safetensors", path
    elif path.is_dir():
        stages = finished_stages(path)
        if not stages:
            raise CheckpointError(f"{path}: no finished stage (stage-*/model.safetensors with its stage.json) "
                                  "in this run folder")
        return _recipe_of(stages[-1].parent, stages[-1] / "model.safetensors"), [s / "model.safetensors" for s in stages]
    else:
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if (stage_dir / "recipe.json").exists():  # a folder of its own
        return _recipe_of(stage_dir, weights), [weights]
    k = stage_number(stage_dir)
    earlier = [s / "model.safetensors" for s in finished_stages(stage_dir.parent) if stage_number(s) < k]
    return _recipe_of(stage_dir.parent, weights), earlier + [weights]


def finished_stages(run_dir):
    """The run's finished stage folders (``stage-<k>-<name>/`` with ``stage.json`` and
    ``model.safetensors``; not ``.partial`` ones), stage 10 after stage 9."""
    return sorted((p for p in Path(run_dir).glob("stage-*") if (p / "stage.json").exists()
                   and (p / "model.safetensors").exists() and not p.name.endswith(".partial")),
                  key=lambda p: (stage_number(p), p.name))


def _recipe_of(folder, weights):
    if not (Path(folder) / "recipe.json").exists():
        raise CheckpointError(f"{weights}: no recipe.json beside it or in its run folder")
    return load_recipe_json(folder)


def load_checkpoint(model, files):
    """Load the stage files of :func:`find_checkpoint` into ``model`` in order (a later stage's tensors
    over an earlier's)."""
    for f in files:
        load_model_weights(model, f)


def run_weights(path) -> dict:
    """``{name: tensor}`` of every tuned tensor of a run (or up to a stage), composed as
    :func:`load_checkpoint` loads them: what differs from the pretrained models."""
    out = {}
    for f in find_checkpoint(path)[1]:
        out.update(load_tensors(f)[0])
    return out
