"""Typed values: a dataclass built from a dict, and every spelling a user types for a field's type.

:mod:`eim.config` builds recipes with :func:`build`; command-line overrides arrive as text and are
read by :func:`parse_value`, YAML files arrive as YAML 1.1 values (where ``1e-4`` is a string), and
:func:`coerce` turns both into the field's type or raises :class:`eim.errors.ConfigError` naming the
key, what it expects and what it got.
"""

import dataclasses
import types
import typing
from typing import Any

import yaml

from eim.errors import ConfigError


def build(cls, data, prefix):
    """Build dataclass ``cls`` from a dict, checking keys and types against its fields."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: unknown key (allowed: {', '.join(fields)})")
        kwargs[key] = coerce(hints[key], value, f"{prefix}.{key}")
    return cls(**kwargs)


NULLS = ("null", "none", "~", "")  # what an optional field reads as None, in any case
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(tp, value, key):
    """``value`` as type ``tp``, accepting every spelling a user types for it.

    float: ``1e-4``, ``1E-4``, ``.5``, ``1_000``, ints; int: ``1_000``, ``1e3`` and integral floats;
    bool: true/false, yes/no, on/off, 1/0; a list of strings: ``[a, b]`` or ``a,b`` (one name
    alone is a list of one); an optional field: None, ``null``, ``none``, ``~`` or ``""``. Strings are parsed here too, so a YAML file's ``lr: 1e-4`` (a string in YAML 1.1)
    means what it looks like.
    """
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in NULLS):
            return None
        return coerce(args[0], value, key)
    text = value.strip() if isinstance(value, str) else None
    if tp is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if text is not None:
            try:
                return float(text)  # Python's float() reads 1e-4, 1E-4, .5, 1_000, -3
            except ValueError:
                pass
    if tp is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        number = value
        if text is not None:
            try:
                return int(text)  # 1_000, -3
            except ValueError:
                try:
                    number = float(text)  # 1e3
                except ValueError:
                    number = None
        if isinstance(number, float) and number.is_integer():
            return int(number)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
    if tp is str and isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)  # an id like 123; floats are refused (1.10 would lose its 0)
    if origin is list and typing.get_args(tp) == (str,) and text is not None and not text.startswith("["):
        return [x.strip() for x in text.split(",") if x.strip()]  # --train.report_to tensorboard,wandb
    if (tp is list or origin is list) and isinstance(value, list):
        (item,) = typing.get_args(tp) or (None,)
        if item is None or dataclasses.is_dataclass(item):  # a list of sections: built by its owner
            return value
        return [coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if (tp is dict or origin is dict) and isinstance(value, dict):
        return value  # a mapping's values are checked by its owner (stage loss weights)
    name = getattr(origin or tp, "__name__", tp)
    hint = {float: "; give a number, e.g. 1e-4", int: "; give a whole number, e.g. 1000",
            bool: "; give true or false", str: "; quote it, e.g. '1.10'"}.get(tp, "")
    raise ConfigError(f"{key}: expected {name}, got {value!r} ({type(value).__name__}){hint}")


def parse_value(text, tp=None):
    """One command-line value as the field of type ``tp`` takes it.

    A string field (``name_or_path``, ``stop_text``) keeps the text as typed (``007`` stays
    ``007``, ``1.10`` stays ``1.10``), but an optional one reads ``null``/``none``/``~`` as None;
    everything else is a YAML scalar or flow value (``[a, b]``, ``{base: 1.0}``), then
    :func:`coerce` accepts every spelling of the field's type (``1e-4`` is a float although
    YAML 1.1 reads it as a string).
    """
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
    base = next((a for a in typing.get_args(tp) if a is not type(None)), None) if optional else tp
    if base is str:
        return None if optional and text.strip().lower() in NULLS else text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML (e.g. "a: b: c"): the field's check names it


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (its factory's, for a list or a dict)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def json_value(value: Any) -> Any:
    """``value`` as JSON-ready plain data (dataclasses as dicts, tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value
