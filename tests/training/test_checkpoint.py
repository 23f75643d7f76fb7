"""Checkpoints: a corrupt file is a clear error (eim.training.checkpoint)."""

import pytest
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
    recipe2, weights = find_checkpoint(tmp_path)
    model, _ = build_model(recipe2)
    with pytest.raises(CheckpointError, match="not a readable safetensors file .* corrupt or truncated"):
        load_model_weights(model, weights)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        find_checkpoint(tmp_path / "nope")
