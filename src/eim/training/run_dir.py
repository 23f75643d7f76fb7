"""The run folder, and the rules that keep what it already holds (docs/design.md §8).

::

    RUN/recipe.json                   the recipe (eim eval / caption rebuild the model from it)
    RUN/run.json                      the run's identity: its recipe, its data's fingerprint and
                                      the digests of the base models it starts from
    RUN/origin.json                   the folder it was trained from (where relative model paths
                                      resolve; not part of the identity)
    RUN/banks/                        feature banks (caches, reused when their fingerprint matches)
    RUN/stage-<k>-<name>.partial/     the running stage: metrics.jsonl, checkpoint/, run.json
    RUN/stage-<k>-<name>/             a finished stage: model.safetensors (the parameters it
                                      trained), stage.json, metrics.jsonl, run.json,
                                      rng-<rank>.safetensors (the RNG at its end)

A stage runs in its ``.partial`` folder, renamed into place when it finishes, so a finished
stage's files are replaced only by a finished stage. Before anything is written, the folder's
contents decide (:meth:`RunFolder.check`):

- it holds a **different run** (another recipe, other data, other weights at the base models'
  paths, e.g. encoders pretrained again): refused, unless ``overwrite``;
- it holds this run's output (a finished stage or a checkpoint) and ``resume`` is not given:
  refused, unless ``overwrite`` (``resume`` reuses it; nothing is retrained by accident);
- ``overwrite``: the old run's files stay until the new run's first stage has finished, then
  they are removed, so a failure before that leaves them as they were.

Settings that do not change what is trained (``generation``, ``train.log_every``,
``train.save_every``, ``train.num_workers``, the trackers and the validation settings) are not part
of the identity, nor is where the data lives (its index files are compared by content: a moved
dataset is the same data).
"""

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eim.banks import dataset_fingerprint
from eim.config import MAIN, Recipe, build_recipe, recipe_delta
from eim.data.dataset import Dataset
from eim.digests import folder_digest
from eim.errors import CheckpointError, ConfigError
from eim.io import read_json, recover_dir, replace_dir, write_json
from eim.training.checkpoint import write_origin
from eim.training.stage import stage_dir

# what changes how a run is watched or fed, not what it trains: not part of its identity
RUNTIME = {"generation": None, "train": ("log_every", "save_every", "num_workers", "report_to", "run_name", "eval_every",
                                         "eval_samples", "eval_banks", "eval_generate")}
PARTIAL = ".partial"


class RunFolderError(CheckpointError):
    """``--out`` holds a run that this command must not touch (a different one, or output that
    only ``--resume`` or ``--overwrite`` may use)."""


def identity(recipe: Recipe, datasets: Mapping[str, Dataset], models: bool = True) -> dict[str, Any]:
    """``{"recipe": the recipe's non-default fields, "data": dataset fingerprint, "models": digests}``:
    what makes two runs the same. The recipe is compared by the fields that differ from their
    defaults (:func:`eim.config.recipe_delta`), so a field added to a later eim with a default leaves
    every existing run valid.

    ``datasets``: ``{name: dataset}`` (:func:`eim.training.stage.resolve_datasets`); a run on the
    main dataset alone keeps the one-dataset form, ``{"datasets": {name: fingerprint}}`` otherwise.
    ``models``: digest the base models' weight, config and tokenizer files
    (:func:`eim.banks.folder_digest`; a hub id stands for itself), so the same path holding other
    weights is another run; only the rank that checks the folder needs them."""
    fp = (dataset_fingerprint(datasets[MAIN]) if set(datasets) == {MAIN}
          else {"datasets": {n: dataset_fingerprint(d) for n, d in sorted(datasets.items())}})
    out = {"recipe": json.loads(json.dumps(recipe_delta(recipe))), "data": fp}
    if models:
        out["models"] = {"vision": folder_digest(recipe.vision.name_or_path), "lm": folder_digest(recipe.lm.name_or_path)}
    return out


def _moved(data):
    """A dataset fingerprint that does not depend on where the data lives (its files by content)."""
    if isinstance(data, dict) and isinstance(data.get("files"), dict):
        return {**data, "files": sorted(data["files"].values())}
    return data


def _full(recipe):
    """A recorded recipe (its non-default fields, or the whole recipe as earlier versions wrote it)
    with every field filled in by today's defaults, so both forms compare alike; a recipe today's
    schema cannot read stays as recorded (and differs from any run of today's)."""
    try:
        return json.loads(json.dumps(build_recipe(recipe).to_dict()))
    except (ConfigError, TypeError, AttributeError):
        return recipe


def _comparable(ident):
    recipe = _full(dict(ident.get("recipe") or {}))
    for section, keys in RUNTIME.items():
        if keys is None:
            recipe.pop(section, None)
        elif isinstance(recipe.get(section), dict):
            recipe[section] = {k: v for k, v in recipe[section].items() if k not in keys}
    data = ident.get("data")  # a moved dataset is the same data
    if isinstance(data, dict) and isinstance(data.get("datasets"), dict):
        data = {"datasets": {n: _moved(d) for n, d in data["datasets"].items()}}
    return {"recipe": recipe, "data": _moved(data), "models": ident.get("models")}


def differences(old, new):
    """Human lines naming what differs between two identities (``train.lr: 2e-05 -> 0.0001``)."""
    a, b = _comparable(old), _comparable(new)
    out = []

    def walk(x, y, key):
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                walk(x.get(k), y.get(k), f"{key}.{k}" if key else str(k))
        elif x != y:
            out.append(f"{key}: {json.dumps(x)} -> {json.dumps(y)}")

    walk(a["recipe"], b["recipe"], "")
    if None not in (a["models"], b["models"]):
        out += [f"{k} model: the weights at its path differ" for k in a["models"] if a["models"][k] != b["models"].get(k)]
    if a["data"] is not None and a["data"] != b["data"]:
        named = lambda d: d.get("datasets") if isinstance(d.get("datasets"), dict) else {MAIN: d}  # noqa: E731
        old, new = named(a["data"]), named(b["data"])
        for name in sorted(set(old) | set(new)):
            x, y = old.get(name) or {}, new.get(name) or {}
            what = [k for k in ("format", "split", "records", "files", "parts") if x.get(k) != y.get(k)]
            what = [k if k != "files" else "file contents" for k in what]
            if what:
                label = "data" if set(old) == set(new) == {MAIN} else f"data {name!r}"
                out.append(f"{label}: {', '.join(what)} differ")
    return out


def same(old, new):
    """Two identities name the same run (an identity without data, from before run.json, matches
    on its recipe; one without model digests, from before they were recorded, on recipe and data)."""
    a, b = _comparable(old), _comparable(new)
    return (a["recipe"] == b["recipe"] and (a["data"] is None or a["data"] == b["data"])
            and (None in (a["models"], b["models"]) or a["models"] == b["models"]))


class RunFolder:
    """One run folder seen by one run (``ident``); ``main``: this process writes (rank 0)."""

    def __init__(self, root, ident, main=True):
        self.root, self.ident, self.main = Path(root), ident, main
        self.replacing = False  # overwrite in progress: the old run goes at the first commit

    # --- paths --------------------------------------------------------------------------------
    def final(self, k, stage):
        return stage_dir(self.root, k, stage)

    def partial(self, k, stage):
        d = self.final(k, stage)
        return d.with_name(d.name + PARTIAL)

    def _stage_folders(self):
        return sorted(p for p in self.root.glob("stage-*") if p.is_dir())

    # --- what the folder holds ----------------------------------------------------------------
    def held(self):
        """``(identity or None, [finished stage folders], [partial folders with a checkpoint])``."""
        ident = None
        if (self.root / "run.json").exists():
            ident = read_json(self.root / "run.json")
        elif (self.root / "recipe.json").exists():  # a run folder from before run.json
            ident = {"recipe": read_json(self.root / "recipe.json"), "data": None}
        finished, checkpoints = [], []
        for p in self._stage_folders():
            if (p / "stage.json").exists():
                finished.append(p)
            elif p.name.endswith(PARTIAL) and (p / "checkpoint").is_dir():
                checkpoints.append(p)
        if ident is None and checkpoints and (checkpoints[0] / "run.json").exists():
            ident = read_json(checkpoints[0] / "run.json")  # killed in its first stage
        return ident, finished, checkpoints

    def check(self, resume=False, overwrite=False):
        """-> ``(refusal message or None, replacing)``, from what the folder holds (rank 0 checks,
        the others take its verdict: :meth:`accept`)."""
        ident, finished, checkpoints = self.held()
        output = finished + checkpoints
        names = ", ".join(p.name for p in output)
        if output and ident is None:
            ident = {"recipe": None, "data": None}  # stage folders without a recipe: not this run
        if output and not same(ident, self.ident) and not overwrite:
            diff = "; ".join(differences(ident, self.ident)[:6]) or "no recipe.json"
            return (f"{self.root} holds a different run ({names}; it differs in {diff}): nothing was "
                    "changed; pass --overwrite to replace it (its files go once the new run's first stage "
                    "has finished), or choose another --out"), False
        if output and not resume and not overwrite:
            return (f"{self.root} already holds this run ({names}): nothing was changed; pass --resume to "
                    "reuse its finished stages and continue from its checkpoint, or --overwrite to train it "
                    "again (the old files go once the new run's first stage has finished)"), False
        return None, bool(output) and overwrite and not (resume and same(ident, self.ident))

    def accept(self, verdict):
        """Raise the refusal of :meth:`check` (:class:`RunFolderError`, nothing written), or get the
        folder ready. The run's ``recipe.json`` / ``run.json`` are written when a stage is moved
        into place and when the run ends, never by a command that fails before that."""
        refusal, self.replacing = verdict
        if refusal:
            raise RunFolderError(refusal)
        if self.main:
            self.root.mkdir(parents=True, exist_ok=True)

    def write_identity(self):
        """``recipe.json``, ``run.json`` and ``origin.json`` of this run (rank 0; at a commit and at the end)."""
        if self.main:
            write_json(self.ident["recipe"], self.root / "recipe.json")
            write_json(self.ident, self.root / "run.json")
            write_origin(self.root, self.ident["recipe"])

    def stage_state(self, k, stage, resume):
        """``"finished"`` (reuse it), ``"resume"`` (continue its checkpoint) or ``"fresh"``. Finishes
        first what a kill interrupted (a stage renamed halfway, a checkpoint swapped halfway)."""
        final, part = self.final(k, stage), self.partial(k, stage)
        if self.main:
            recover_dir(final)
            recover_dir(part / "checkpoint")
            if (part / "stage.json").exists() and self._ours(part):  # finished, not yet moved
                replace_dir(part, final)
        if not resume:
            return "fresh"
        if not self.replacing and (final / "stage.json").exists() and self._ours(final):
            return "finished"
        # an overwrite killed in its first stage resumes that stage, never the old run's
        ckpt = part / "checkpoint"  # step.json: DeepSpeed / FSDP keep the weights in their own state
        if ((ckpt / "model.safetensors").exists() or (ckpt / "step.json").exists()) and self._ours(part, strict=self.replacing):
            return "resume"
        return "fresh"

    def _ours(self, folder, strict=False):
        """The stage folder belongs to this run (one from before run.json passes the run's own
        check, unless ``strict``)."""
        f = folder / "run.json"
        return same(read_json(f), self.ident) if f.exists() else not strict

    # --- writing ------------------------------------------------------------------------------
    def start(self, k, stage, fresh):
        """The stage's ``.partial`` folder, emptied for a fresh start (rank 0; the caller waits)."""
        part = self.partial(k, stage)
        if self.main:
            if fresh and part.exists():
                shutil.rmtree(part)
            part.mkdir(parents=True, exist_ok=True)
            write_json(self.ident, part / "run.json")
        return part

    def abandon(self, k, stage):
        """A stage failed: drop its ``.partial`` folder unless it holds a checkpoint (rank 0)."""
        part = self.partial(k, stage)
        if self.main and not (part / "checkpoint").is_dir():
            shutil.rmtree(part, ignore_errors=True)

    def commit(self, k, stage):
        """Move the finished ``.partial`` folder into place (rank 0). The first commit of an
        ``overwrite`` first removes the old run's stage folders and writes the new identity."""
        if not self.main:
            return
        part = self.partial(k, stage)
        if self.replacing:
            for p in self._stage_folders():
                if p != part:
                    shutil.rmtree(p)
            self.replacing = False
        self.write_identity()
        replace_dir(part, self.final(k, stage))


__all__ = ["RunFolder", "RunFolderError", "differences", "identity", "same"]
