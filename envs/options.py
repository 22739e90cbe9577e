"""Reset options: a family's options are a small dataclass, validated by its type hints.

``GET /v1/envs`` publishes each family's options through ``options_schema``; a reset's raw
``options`` object becomes the dataclass through ``options_from_mapping``, and any unknown key,
wrong type or out-of-range value is a ``ValidationFailed`` (HTTP 422) that names the option.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from toolgym.errors import ValidationFailed

__all__ = ["options_from_mapping", "options_schema"]


def _check_type(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ValidationFailed(f"option {name!r} must be one of {list(allowed)}, got {value!r}", option=name)
        return value
    if origin in (typing.Union, types.UnionType):
        errors: list[str] = []
        for arm in typing.get_args(hint):
            if arm is type(None):
                if value is None:
                    return None
                errors.append(f"option {name!r} may be null")
                continue
            try:
                return _check_type(name, value, arm)
            except ValidationFailed as exc:
                errors.append(exc.message)
        # Each arm's own message says what it wanted, so a user sees every accepted form.
        raise ValidationFailed(
            f"option {name!r}: {value!r} matches no allowed type ({'; or '.join(errors)})", option=name
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ValidationFailed(f"option {name!r} must be a boolean, got {value!r}", option=name)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationFailed(f"option {name!r} must be an integer, got {value!r}", option=name)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationFailed(f"option {name!r} must be a number, got {value!r}", option=name)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValidationFailed(f"option {name!r} must be a string, got {value!r}", option=name)
        return value
    return value


@functools.lru_cache(maxsize=256)
def _hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of an options dataclass, computed once per class.

    It resolves string annotations anew on every call, which every reset would otherwise pay.
    """
    return typing.get_type_hints(cls)


def options_from_mapping(cls: type, raw: Mapping[str, Any], **defaults: Any) -> Any:
    """Build the options dataclass ``cls`` from ``raw``.

    Unknown keys and wrong types are a ``ValidationFailed`` naming the option; ``defaults``
    override field defaults (e.g. by split). A field with ``metadata["min"]``/``["max"]`` is
    range-checked.
    """
    if not isinstance(raw, Mapping):
        raise ValidationFailed("options must be a JSON object")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValidationFailed(
            f"unknown option(s) {unknown}; this env takes {sorted(fields)}", options=unknown
        )
    values: dict[str, Any] = dict(defaults)
    for name, value in raw.items():
        checked = _check_type(name, value, hints[name])
        meta = fields[name].metadata
        if isinstance(checked, int | float) and not isinstance(checked, bool):
            if "min" in meta and checked < meta["min"]:
                raise ValidationFailed(f"option {name!r} must be >= {meta['min']}, got {checked}", option=name)
            if "max" in meta and checked > meta["max"]:
                raise ValidationFailed(f"option {name!r} must be <= {meta['max']}, got {checked}", option=name)
        values[name] = checked
    return cls(**values)


def options_schema(cls: type, **defaults: Any) -> dict[str, Any]:
    """A JSON description of an options dataclass, for ``GET /v1/envs``."""
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        entry: dict[str, Any] = {"doc": f.metadata.get("doc", "")}
        if typing.get_origin(hint) is Literal:
            entry["type"] = "enum"
            entry["choices"] = list(typing.get_args(hint))
        else:
            entry["type"] = getattr(hint, "__name__", str(hint))
        if f.name in defaults:
            entry["default"] = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            entry["default"] = f.default
        for key in ("min", "max"):
            if key in f.metadata:
                entry[key] = f.metadata[key]
        out[f.name] = entry
    return out
