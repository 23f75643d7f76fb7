"""Recipes: every shipped recipe loads; bad values name the key and the allowed values (eim.config)."""

import pytest

from eim.cli import main
from eim.config import load_recipe, recipe_names
from eim.errors import ConfigError


def test_every_shipped_recipe_loads():
    names = recipe_names()
    assert {"clipcap", "clipcap_eim", "clipcap_joint"} <= set(names)
    for n in names:
        r = load_recipe(n)
        assert r.stages and r.name == n


@pytest.mark.parametrize("override, needle", [
    ({"train.lrr": 1}, "train.lrr: unknown key (allowed: batch_size"),
    ({"train.lr": "fast"}, "train.lr: expected float, got 'fast'"),
    ({"vision.features": "half"}, "vision.features: 'half' is not allowed (allowed: pooled, full)"),
    ({"projector.type": "qformer"}, "projector.type: 'qformer' is not allowed (allowed: clipcap_mlp"),
    ({"vision.features": "full"}, "projector.type 'clipcap_mlp' maps one pooled vector"),
    ({"stages.0.trainable": ["vision"]}, "trains 'vision' but vision.trainable is 'frozen'"),
])
def test_bad_recipe_values_name_key_and_allowed_values(override, needle):
    with pytest.raises(ConfigError, match=None) as e:
        load_recipe("clipcap", override)
    assert needle in str(e.value)


def test_cli_rejects_unknown_override_and_recipe(capsys):
    assert main(["params", "clipcap", "--train.nope", "1"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err
    assert main(["params", "no_such_recipe"]) == 2
    assert "unknown recipe 'no_such_recipe' (shipped: clipcap" in capsys.readouterr().err
