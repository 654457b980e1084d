"""The papers' training recipes: versioned YAML files, one per paper setting.

A recipe file holds `recipe:` (name, version, paper, notes), `config:` (a full `RunConfig` as
plain data) and `variants:` (named overrides merged into `config`, e.g. `cpu` for this
machine's scale). `sca-unet-3d:cpu` or `load_recipe("sca-unet-3d", "cpu")` selects a variant:
the same file, a few different values, no other code path. A recipe that differs from another
in a few values names it with a top-level `extends:` and holds only its own `recipe:` section
and the differing values: its config and variants are merged over the parent's.
"""

from __future__ import annotations

import difflib
from importlib import resources
from typing import Any

from kidneyseg.config import RunConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.plaindata import apply_overrides, deep_merge, from_dict, to_dict, yaml_load


def _files() -> dict[str, Any]:
    return {
        p.name.removesuffix(".yaml").replace("_", "-"): p
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".yaml")
    }


def list_recipes() -> list[str]:
    """Names of the packaged recipes (e.g. `sca-unet-3d`)."""
    return sorted(_files())


def parse_spec(spec: str, variant: str | None = None) -> tuple[str, str | None]:
    """Split `name:variant`; an explicit `variant` argument must agree with the spec's."""
    name, sep, inline = spec.partition(":")
    if sep and variant and inline != variant:
        raise KidneysegError(f"recipe {spec!r} names variant {inline!r} but --variant is {variant!r}")
    return name, (inline if sep else variant) or None


def recipe_document(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The whole parsed recipe file (`recipe`, `config`, `variants`), merged over the recipe it
    `extends:` if any."""
    files = _files()
    if name not in files:
        close = difflib.get_close_matches(name, list(files), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise KidneysegError(f"unknown recipe {name!r}; {hint}available: {', '.join(sorted(files))}")
    if name in seen:
        raise KidneysegError(f"recipes extend each other in a cycle: {' -> '.join((*seen, name))}")
    doc = yaml_load(files[name].read_text(encoding="utf-8"))
    parent = doc.pop("extends", None)
    if parent is not None:
        base = recipe_document(str(parent), (*seen, name))
        doc["config"] = deep_merge(base["config"], doc.get("config") or {})
        doc["variants"] = deep_merge(base.get("variants") or {}, doc.get("variants") or {})
    for key in ("recipe", "config"):
        if not isinstance(doc.get(key), dict):
            raise KidneysegError(f"recipe {name!r} has no {key!r} section")
    return doc


def _variant(doc: dict[str, Any], name: str, variant: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """A variant's overrides, with those of the variant it `extends:` merged in first."""
    variants = doc.get("variants") or {}
    if variant not in variants:
        raise KidneysegError(
            f"recipe {name!r} has no variant {variant!r}; it has: {', '.join(variants) or 'none'}"
        )
    if variant in seen:
        raise KidneysegError(f"recipe {name!r}: variants extend each other in a cycle: {' -> '.join(seen)}")
    own = dict(variants[variant])
    parent = own.pop("extends", None)
    if parent is None:
        return own
    return deep_merge(_variant(doc, name, str(parent), (*seen, variant)), own)


def recipe_data(spec: str, variant: str | None = None) -> dict[str, Any]:
    """The plain-data config of a recipe (with its variant merged in), before overrides."""
    name, variant = parse_spec(spec, variant)
    doc = recipe_document(name)
    data = doc["config"]
    if variant is not None:
        data = deep_merge(data, _variant(doc, name, variant, ()))
    label = f"{name}{':' + variant if variant else ''}@{doc['recipe'].get('version', 1)}"
    return deep_merge(data, {"train": {"recipe": label}})


def load_recipe(
    spec: str, variant: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """The `RunConfig` of recipe `spec` (`name` or `name:variant`) with `section.key=value`
    overrides applied.

    Raises:
        KidneysegError: unknown recipe or variant, or an override that does not fit the config.
    """
    data = to_dict(from_dict(RunConfig, recipe_data(spec, variant), f"recipe {spec}"))
    return from_dict(RunConfig, apply_overrides(data, list(overrides)), "config")
