"""Checkpoints: the tuned tensors of a model (safetensors), optimizer state (safetensors + JSON).

A model checkpoint holds every parameter some stage of the recipe may train (everything that can
differ from the pretrained weights); the rest is rebuilt from the recipe's pretrained models.
``RUN_DIR/recipe.json`` records the recipe, so a checkpoint folder is self-describing.
"""

from pathlib import Path

import torch

from eim.config import build_recipe
from eim.errors import CheckpointError
from eim.io import load_tensors, read_json, save_tensors, write_json
from eim.training.stage import stage_number


def tunable_state(model):
    """``{name: tensor}`` of every parameter any segment's tuning method can train."""
    ids = {id(p) for seg in ("vision", "projector", "lm") for p in model.segment_tunable(seg)}
    return {n: p for n, p in model.named_parameters() if id(p) in ids}


def save_model(model, path, metadata=None):
    save_tensors(tunable_state(model), path, metadata)


def load_model_weights(model, path):
    """Load a model checkpoint into ``model``; every tensor must match a parameter by name and shape."""
    tensors, meta = load_tensors(path)
    params = dict(model.named_parameters())
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
    return build_recipe(read_json(Path(run_dir) / "recipe.json"))


def find_checkpoint(path):
    """Resolve CHECKPOINT given to ``eim caption``/``eim eval``: a run dir (its last finished
    stage), a stage dir, or a ``model.safetensors`` file. Returns (recipe, weights_path)."""
    path = Path(path)
    if path.is_file():
        weights, stage_dir = path, path.parent
    elif (path / "model.safetensors").exists():
        weights, stage_dir = path / "model.safetensors", path
    elif path.is_dir():  # finished stages only (not a .partial one), stage 10 after stage 9
        stages = sorted((p for p in path.glob("stage-*") if (p / "stage.json").exists()
                         and (p / "model.safetensors").exists() and not p.name.endswith(".partial")),
                        key=lambda p: (stage_number(p), p.name))
        if not stages:
            raise CheckpointError(f"{path}: no finished stage (stage-*/model.safetensors with its stage.json) "
                                  "in this run folder")
        weights, stage_dir = stages[-1] / "model.safetensors", stages[-1]
    else:
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    for d in (stage_dir, stage_dir.parent):
        if (d / "recipe.json").exists():
            return load_recipe_json(d), weights
    raise CheckpointError(f"{weights}: no recipe.json beside it or in its run folder")
