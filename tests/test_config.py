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
    r = load_recipe("clipcap_eim", parse_overrides(["--stages.lm.lr", "1e-4", "--stages.st.steps", "7",
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


# --- every spelling of a field's type (issue 18) -----------------------------------------------
@pytest.mark.parametrize("key, text, value", [
    ("train.lr", "1e-4", 1e-4), ("train.lr", "1E-4", 1e-4), ("train.lr", ".5", 0.5),
    ("train.lr", "1_000", 1000.0), ("train.lr", "-3", -3.0), ("train.lr", "2.0e-5", 2e-5),
    ("train.batch_size", "1_000", 1000), ("train.batch_size", "1e3", 1000), ("train.batch_size", "8", 8),
    ("train.cache_clip_features", "no", False), ("train.cache_clip_features", "True", True),
    ("train.cache_clip_features", "1", True), ("eim.shard_banks", "on", True),
    ("stages.0.lr", "null", None), ("stages.0.lr", "none", None), ("stages.0.lr", "None", None),
    ("stages.0.lr", "~", None), ("stages.0.lr", "3E-3", 3e-3),
    ("vision.num_tokens", "none", None), ("vision.num_tokens", "50", 50),
    ("generation.stop_text", "none", None), ("generation.stop_text", ".", "."),
    ("vision.name_or_path", "007", "007"), ("vision.name_or_path", "1.10", "1.10"),  # strings as typed
    ("train.report_to", "tensorboard", ["tensorboard"]), ("train.report_to", "tensorboard,wandb", ["tensorboard", "wandb"]),
    ("train.report_to", "[tensorboard, wandb]", ["tensorboard", "wandb"]), ("train.report_to", "[]", []),
    ("lm.lora_target", "q_proj, v_proj", ["q_proj", "v_proj"]),
])
def test_override_takes_every_spelling_of_its_type(key, text, value):
    r = load_recipe("clipcap_eim", [(key, text)])
    node = r
    for part in key.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    assert node == value and type(node) is type(value), (key, text, node)


def test_readme_override_example_and_yaml_file_spellings(tmp_path, capsys):
    # the README's own example; YAML 1.1 reads 1e-4 as a string
    assert main(["params", "clipcap_eim", "--train.lr", "1e-4", "--stages.2.epochs", "5", "--json"]) == 0
    capsys.readouterr()
    r = load_recipe("clipcap_eim", {"train.lr": "1e-4", "stages.2.epochs": "5", "stages.2.losses.ie": "1e-1"})
    assert r.train.lr == 1e-4 and r.stages[2].epochs == 5.0 and r.stages[2].losses == {"base": 1.0, "ie": 0.1}
    y = tmp_path / "mine.yaml"
    y.write_text("train:\n  lr: 1e-4\n  batch_size: 1e3\nstages:\n  - name: base\n    losses: {base: 1e0}\n"
                 "    trainable: [projector]\n    steps: 1_000\n    lr: none\n")
    r = load_recipe(str(y))
    assert (r.train.lr, r.train.batch_size, r.stages[0].losses, r.stages[0].steps, r.stages[0].lr) == (
        1e-4, 1000, {"base": 1.0}, 1000, None)


@pytest.mark.parametrize("key, text, needle", [
    ("train.lr", "fast", "recipe.train.lr: expected float, got 'fast' (str); give a number, e.g. 1e-4"),
    ("train.batch_size", "2.5", "recipe.train.batch_size: expected int, got 2.5 (float); give a whole number"),
    ("train.cache_clip_features", "maybe", "expected bool, got 'maybe' (str); give true or false"),
    ("train.lr", "none", "recipe.train.lr: expected float"),  # not optional: none is not a value
    ("stages.0.losses.st", "lots", "stages[st].losses.st: weight must be a number >= 0, got 'lots'"),
])
def test_bad_spellings_name_the_key_and_the_type(key, text, needle):
    with pytest.raises(ConfigError) as e:
        load_recipe("clipcap_eim", [(key, text)])
    assert needle in str(e.value)
