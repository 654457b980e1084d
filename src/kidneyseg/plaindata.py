"""Frozen dataclasses to and from plain data (dicts, lists, scalars), YAML and overrides.

`from_dict` builds a dataclass from plain data, rejecting unknown keys with a suggestion;
`to_dict` turns it back into plain data for YAML or JSON; `parse_override` reads one
`key=value` string (the value parsed as YAML), which `apply_overrides` applies as
`section.key=value` and the CLI uses for its other overrides. `json_text` writes plain data as
strict JSON.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kidneyseg.errors import KidneysegError

T = TypeVar("T")


class _CoreSchemaLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core schema for booleans and numbers: only
    true/false are booleans (not yes/no/on/off), `0123` is 123 (YAML 1.1: octal 83), `1:30` a
    string (1.1: 90, base 60), `5e-4` a float (1.1: a string); `0o17` and `0x1f` stay octal and
    hex. Config files, recipes, checkpoints' configs and overrides are all read with it."""


_CORE_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_CoreSchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _CORE_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    (
        "float",
        r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
        "-+.0123456789",
    ),
):
    _CoreSchemaLoader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), list(_first)
    )


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    return int(text[2:] if base != 10 else text, base)


_CoreSchemaLoader.add_constructor("tag:yaml.org,2002:int", _core_int)


def yaml_load(text: str) -> Any:
    """Parse YAML text with the core schema's booleans and numbers (`_CoreSchemaLoader`).

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    return yaml.load(text, Loader=_CoreSchemaLoader)


def is_whole(value: Any) -> bool:
    """Whether `value` is a whole number as YAML and Python give it (an `int`, not a `bool`)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise KidneysegError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (KidneysegError, TypeError, ValueError):
                continue
        raise KidneysegError(f"{where}: {value!r} is not a valid {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise KidneysegError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise KidneysegError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise KidneysegError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and is_whole(value):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise KidneysegError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build the frozen dataclass `cls` from `data`; unknown keys are an error."""
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, list(types_), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {sorted(types_)}"
        raise KidneysegError(f"{where}: unknown key {key!r}{hint}")
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) for a dataclass, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The dotted keys (`train.lr`) where two configs' plain data differ, with both values."""
    a, b = to_dict(a), to_dict(b)
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [(prefix, a, b)]
    out = []
    for key in sorted(set(a) | set(b)):
        out += differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return out


def parse_override(item: str, form: str = "section.key=value") -> tuple[str, Any]:
    """Split one `key=value` override; the value is parsed as YAML (`[16, 32]` is a list).

    Raises:
        KidneysegError: no `=`, no key, or a value that is not YAML; the message shows `form`.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise KidneysegError(f"override {item!r} must look like {form}")
    try:
        return key, yaml_load(raw)
    except yaml.YAMLError:
        raise KidneysegError(f"override {item!r}: the value is not valid YAML") from None


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `data` with `a.b.c=value` overrides applied (value parsed as YAML)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, value = parse_override(item)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise KidneysegError(f"override {item!r}: {part!r} is not a config section")
            node = node[part]
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` merged in recursively (update wins). An empty mapping in `update`
    replaces the base's (a variant's `label_mapping: {}` means no mapping, not "unchanged")."""
    out = dict(base)
    for k, v in update.items():
        merge = isinstance(v, dict) and v and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if merge else v
    return out


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KidneysegError("no such config file", path) from None
    except yaml.YAMLError as exc:
        raise KidneysegError(f"not valid YAML ({exc})", path) from None
    if not isinstance(data, dict):
        raise KidneysegError("a config file must hold a mapping", path)
    return data


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """Plain data as indented JSON text, NaN and infinite numbers written as null: JSON has
    neither, and Python's `NaN`, `Infinity` make a file other readers refuse."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"
