"""Recipes: every shipped recipe loads; bad values name the key and the allowed values (eim.config,
eim.recipe)."""

import pytest

from eim.cli import main
from eim.recipe import load_recipe, parse_overrides, recipe_names
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
    ({"vision.features": "half"}, "vision.features: 'half' is not allowed (allowed: pooled, full, cls, full_projected)"),
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


def test_stages_from_the_command_line_every_way(capsys):
    """A stage is removed, added, addressed by name, or the list replaced, by flags (issue 13)."""
    r = load_recipe("clipcap_eim", parse_overrides(["--stages.drop", "lm"]))
    assert [s.name for s in r.stages] == ["st", "base_ie"]
    r = load_recipe("clipcap_eim", parse_overrides(["--stages.drop", "st,lm"]))
    assert [s.name for s in r.stages] == ["base_ie"]
    r = load_recipe("clipcap_eim", parse_overrides(["--stages.lm.lr", "1.0e-4", "--stages.st.steps", "7",
                                                    "--stages.st.epochs", "null"]))
    assert r.stages[1].lr == 1e-4 and r.stages[0].steps == 7
    r = load_recipe("clipcap", parse_overrides(["--stages.1.name", "lm", "--stages.1.losses", "{lm: 1.0}",
                                                "--stages.1.trainable", "[lm]", "--stages.1.steps", "5"]))
    assert [(s.name, s.losses, s.trainable, s.steps) for s in r.stages][1] == ("lm", {"lm": 1.0}, ["lm"], 5)
    r = load_recipe("clipcap_eim", parse_overrides(["--stages", "[{name: base, losses: {base: 1}, steps: 3}]"]))
    assert [(s.name, s.steps) for s in r.stages] == [("base", 3)]
    for bad, needle in [(["--stages.drop", "nope"], "no stage named 'nope' (stages: st, lm, base_ie)"),
                        (["--stages.9.lr", "1"], "'9' is not a stage index (0..3, 3 appends one)"),
                        (["--stages.drop", "st,lm,base_ie"], "a recipe needs at least one stage"),
                        (["--stages", "3"], "--stages: expected a list of stages")]:
        with pytest.raises(ConfigError) as e:
            load_recipe("clipcap_eim", parse_overrides(bad))
        assert needle in str(e.value), (bad, str(e.value))
    # and through the CLI: the ablation "EIM without its LM stage" needs no YAML file
    assert main(["params", "clipcap_eim", "--stages.drop", "lm", "--json"]) == 0
