"""Checkpoints: a corrupt file is a clear error (eim.training.checkpoint)."""

import pytest
import torch
from helpers import steps, tiny_recipe

from eim.api import train
from eim.errors import CheckpointError
from eim.model.multimodal import build_model
from eim.training.checkpoint import find_checkpoint, load_model_weights


def test_corrupt_checkpoint_gives_clear_error(tiny_dir, data, tmp_path):
    recipe = tiny_recipe(tiny_dir, overrides=steps("c", 1))
    train(recipe, data, tmp_path, quiet=True)
    ckpt = tmp_path / "stage-0-base" / "model.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    recipe2, files = find_checkpoint(tmp_path)
    model, _ = build_model(recipe2)
    with pytest.raises(CheckpointError, match="not a readable safetensors file .* corrupt or truncated"):
        load_model_weights(model, files[-1])
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        find_checkpoint(tmp_path / "nope")


@pytest.fixture(scope="module")
def eim_run(tiny_dir, data, tmp_path_factory):
    """clipcap_eim's three stages (st: projector, lm: LLM, base_ie: all three), two steps each."""
    out = tmp_path_factory.mktemp("eim-run")
    train(tiny_recipe(tiny_dir, "clipcap_eim", overrides=steps("e", 2, 3)), data, out, quiet=True)
    return out


def _model_of(path):
    from eim.api import load_for_inference

    return {n: p.detach().clone() for n, p in load_for_inference(path).model.named_parameters()}


def test_readers_compose_the_stage_files_in_order(eim_run):
    """A stage's file holds what it trained; a reader loads every finished stage's file in order over
    the pretrained models: the run, a stage folder (that stage and the earlier ones), a stage's file."""
    from eim.io import load_tensors

    files = [eim_run / d / "model.safetensors" for d in ("stage-0-st", "stage-1-lm", "stage-2-base_ie")]
    assert find_checkpoint(eim_run)[1] == files
    assert find_checkpoint(eim_run / "stage-1-lm")[1] == files[:2]
    assert find_checkpoint(files[1])[1] == files[:2]
    st, lm = (load_tensors(f)[0] for f in files[:2])
    assert {k.split(".")[0] for k in st} == {"projector"} and {k.split(".")[0] for k in lm} == {"lm"}
    upto_lm = _model_of(eim_run / "stage-1-lm")
    for name, t in {**st, **lm}.items():
        assert torch.equal(upto_lm[name], t), name  # the projector from stage 0, the LLM from stage 1
    whole = _model_of(eim_run)
    for name, t in load_tensors(files[2])[0].items():
        assert torch.equal(whole[name], t), name


def test_a_run_folder_written_before_stage_files_held_their_own_still_loads(eim_run, tmp_path):
    """Earlier eims wrote every tunable tensor into every stage's file: composed the same way, such a
    folder gives the same model."""
    import shutil

    from eim.io import load_tensors, save_tensors

    old = tmp_path / "old"
    shutil.copytree(eim_run, old)
    running = {}
    for d in ("stage-0-st", "stage-1-lm", "stage-2-base_ie"):
        running.update(load_tensors(old / d / "model.safetensors")[0])
        save_tensors(dict(running), old / d / "model.safetensors")
    a, b = _model_of(eim_run), _model_of(old)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_relative_model_paths_resolve_from_anywhere(tiny_dir, data, tmp_path, monkeypatch):
    """A run trained with relative model paths (as `make demo`'s) is read from another folder: its
    paths resolve against the folder it was trained from (origin.json), or else its run folder's
    parents; the run's identity is untouched; a model that is gone is an error naming it."""
    import shutil

    from eim.api import load_for_inference
    from eim.io import read_json

    work = tmp_path / "work"
    shutil.copytree(tiny_dir / "clip", work / "enc" / "clip")
    shutil.copytree(tiny_dir / "gpt2", work / "enc" / "gpt2")
    monkeypatch.chdir(work)
    recipe = tiny_recipe(tiny_dir, overrides={**steps("c", 1), "vision.name_or_path": "enc/clip",
                                              "lm.name_or_path": "enc/gpt2"})
    train(recipe, data, "runs/rel", quiet=True)
    ident = (work / "runs" / "rel" / "run.json").read_text()
    assert read_json(work / "runs" / "rel" / "origin.json") == {"cwd": str(work), "folders": ["lm", "vision"]}
    monkeypatch.chdir(tmp_path)
    inf = load_for_inference(work / "runs" / "rel")
    assert inf.recipe.vision.name_or_path == str(work / "enc" / "clip")
    origin = work / "runs" / "rel" / "origin.json"
    kept = origin.read_bytes()
    origin.unlink()  # a run from before origin.json: found from its parents
    assert load_for_inference(work / "runs" / "rel").recipe.lm.name_or_path == str(work / "enc" / "gpt2")
    origin.write_bytes(kept)
    assert (work / "runs" / "rel" / "run.json").read_text() == ident
    shutil.move(work / "enc", tmp_path / "moved")
    with pytest.raises(CheckpointError, match=r"vision.name_or_path 'enc/clip' is a relative path .* run the command"):
        find_checkpoint(work / "runs" / "rel")
