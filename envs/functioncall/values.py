"""What a tool-call argument may be: JSON values, finite, bounded in depth.

Every call that reaches a verifier, whether a policy wrote it or a task record holds it as the
gold, passes through ``check_value`` first. The verifiers then never meet a NaN (which is not
equal to itself), a tuple, a non-string dict key or a structure deep enough to exhaust
Python's recursion limit, and ``info["parsed_calls"]`` is always valid JSON.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_DEPTH", "ValueProblem", "check_value", "describe_type"]

MAX_DEPTH = 32
"""Deepest nesting of lists/dicts accepted in one argument value."""


class ValueProblem(ValueError):
    """A value that is not a JSON value we accept; ``path`` says where (e.g. ``arguments.x[2]``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def describe_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_value(value: Any, path: str, depth: int = 0) -> None:
    """Raise ``ValueProblem`` unless ``value`` is a JSON value.

    A JSON value: null, boolean, integer, finite number, string, array, or object with string
    keys, nested at most ``MAX_DEPTH`` deep.
    """
    if depth > MAX_DEPTH:
        raise ValueProblem(path, f"nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueProblem(path, f"{value!r} is not a finite number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueProblem(path, f"object key {key!r} is not a string")
            check_value(item, f"{path}.{key}", depth + 1)
        return
    raise ValueProblem(path, f"{describe_type(value)} is not a JSON value")
