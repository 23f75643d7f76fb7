"""Loading a recipe: a shipped one by name (``src/eim/recipes/<name>.yaml``) or any YAML path, with
command-line overrides (docs/design.md §3).

    recipe = load_recipe("clipcap_eim", parse_overrides(["--train.lr", "1e-4", "--stages.drop", "lm"]))

Overrides use dotted keys (``--train.lr 1e-4``, ``--vision.features full``); a stage field is
addressed by index or name (``--stages.0.lr 1e-3``, ``--stages.lm.lr 1e-4``); ``--stages.drop lm``
removes a stage, ``--stages.3.name x ...`` appends one, ``--stages '[...]'`` replaces the list.
The typed schema the result is checked against is :mod:`eim.config`.
"""

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from eim.config import Recipe, StageConfig, build_recipe
from eim.errors import ConfigError
from eim.typed import parse_value

RECIPE_DIR = Path(__file__).parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def field_type(key):
    """The annotated type of dotted ``key`` (``train.lr`` -> float, ``stages.0.steps`` ->
    Optional[int]), or None when the key names no field (its error comes later, from _build)."""
    cls, tp = Recipe, None
    parts = key.split(".")
    i = 0
    while i < len(parts):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if parts[i] not in hints:
            return None
        if cls is Recipe and parts[i] == "stages":  # stages.<index or name>.<field>
            if i + 2 >= len(parts):
                return None  # stages, stages.drop: a list or names, read as YAML
            cls, i = StageConfig, i + 2
            continue
        tp = hints[parts[i]]
        cls, i = tp, i + 1
    return tp


def load_recipe(name_or_path: Union[str, os.PathLike],
                overrides: Optional[Union[Mapping[str, Any], Sequence[tuple[str, Any]]]] = None) -> Recipe:
    """Load a shipped recipe by name (``clipcap``) or a YAML path, then apply dotted overrides.

    ``overrides``: list of ``("train.lr", "1e-4")`` pairs or a dict; string values are read as
    the field's type takes them (:func:`eim.typed.parse_value`), so ``1e-4``, ``.5``, ``1_000``,
    ``true``, ``none`` and ``[a, b]`` mean what they look like.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown recipe {name_or_path!r} (shipped: {', '.join(recipe_names())}; or give a YAML path)")
    if not path.exists():
        raise ConfigError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    data.setdefault("name", path.stem)
    items = overrides.items() if isinstance(overrides, dict) else (overrides or [])
    for key, raw in items:
        _set_dotted(data, key, parse_value(raw, field_type(key)) if isinstance(raw, str) else raw)
    return build_recipe(data)


def _set_dotted(data, key, value):
    """Apply one override. The stage list is data too (docs/design.md §3): ``stages`` replaces it
    (a YAML list of stages), ``stages.drop`` removes stages by name (``lm`` or ``st,lm``), and
    ``stages.<i>.<field>`` / ``stages.<name>.<field>`` set a field, ``i`` = the number of stages
    appending a new one."""
    parts = key.split(".")
    if parts[0] == "stages":
        return _set_stage(data, key, parts[1:], value)
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--{key}: {part!r} is not a section")
    node[parts[-1]] = value


def _set_stage(data, key, parts, value):
    stages = data.setdefault("stages", [{}])  # a recipe without stages: one default stage to fill
    names = [s.get("name", StageConfig.name) if isinstance(s, dict) else getattr(s, "name", "?") for s in stages]
    if not parts:  # --stages '[{name: base, losses: {base: 1}, steps: 100}]'
        if not isinstance(value, list):
            raise ConfigError(f"--stages: expected a list of stages (YAML), got {value!r}")
        data["stages"] = value
        return
    if parts == ["drop"]:  # --stages.drop lm  /  --stages.drop st,lm
        drop = value if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v.strip()]
        unknown = [n for n in drop if n not in names]
        if unknown:
            raise ConfigError(f"--{key}: no stage named {', '.join(map(repr, unknown))} (stages: {', '.join(names)})")
        data["stages"] = [s for s, n in zip(stages, names) if n not in drop]
        return
    where = parts[0]
    if where.isdigit() and int(where) == len(stages):  # the next index appends a new stage
        stages.append({})
    elif where.isdigit() and int(where) < len(stages):
        pass
    elif where in names:
        if names.count(where) > 1:
            raise ConfigError(f"--{key}: {names.count(where)} stages are named {where!r}: address them by index")
        where = str(names.index(where))
    else:
        raise ConfigError(f"--{key}: {where!r} is not a stage index (0..{len(stages)}, {len(stages)} appends one) "
                          f"or a stage name ({', '.join(names)}); --stages.drop NAME removes one")
    if len(parts) < 2:
        raise ConfigError(f"--{key}: give a field of the stage, e.g. --{key}.lr")
    node = stages[int(where)]
    if not isinstance(node, dict):
        node = stages[int(where)] = dataclasses.asdict(node)
    for part in parts[1:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_overrides(extra: Sequence[str]) -> list[tuple[str, str]]:
    """Turn ``['--train.lr', '1e-4', '--vision.features=full']`` into ``[(key, value)]``."""
    out, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}: overrides look like --train.lr 1e-4")
        if "=" in tok:
            k, v = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise ConfigError(f"{tok}: missing value")
            k, v = tok[2:], extra[i + 1]
            i += 2
        if "." not in k and k != "stages":
            raise ConfigError(f"--{k}: unknown option (recipe overrides are dotted, e.g. --train.lr)")
        out.append((k, v))
    return out
