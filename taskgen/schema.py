"""The slice of JSON Schema that tool documents use, checked without a dependency.

Two checks: ``check_tool_schema`` (is this a well-formed OpenAI function tool: every
required parameter among the properties, every type a JSON-schema type, arrays with items,
objects with properties) and ``check_arguments`` (do these arguments satisfy the tool's
``parameters``). Unknown arguments are an error, as they are for the generated code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["JSON_TYPES", "check_arguments", "check_tool_schema"]

JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _type_ok(value: Any, json_type: str) -> bool:
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if json_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "object":
        return isinstance(value, dict)
    return value is None


def _check_property(path: str, schema: Any, errors: list[str]) -> None:
    if not isinstance(schema, Mapping):
        errors.append(f"{path}: not a schema object")
        return
    json_type = schema.get("type")
    if json_type not in JSON_TYPES:
        errors.append(f"{path}: type {json_type!r} is not a JSON-schema type")
        return
    if "description" in schema and not isinstance(schema["description"], str):
        errors.append(f"{path}: description must be a string")
    if "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum:
            errors.append(f"{path}: enum must be a non-empty list")
        elif not all(_type_ok(v, json_type) for v in enum):
            errors.append(f"{path}: enum values must be of type {json_type}")
    for bound in ("minimum", "maximum"):
        numeric = json_type in ("integer", "number")
        if bound in schema and (not numeric or not _type_ok(schema[bound], "number")):
            errors.append(f"{path}: {bound} only applies to numbers")
    if "default" in schema and not _type_ok(schema["default"], json_type):
        errors.append(f"{path}: default must be of type {json_type}")
    if json_type == "array":
        if "items" not in schema:
            errors.append(f"{path}: an array needs items")
        else:
            _check_property(f"{path}[]", schema["items"], errors)
    if json_type == "object":
        _check_object(path, schema, errors)


def _check_object(path: str, schema: Mapping[str, Any], errors: list[str]) -> None:
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        errors.append(f"{path}: an object needs properties")
        return
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        errors.append(f"{path}: required must be a list of names")
        return
    for r in required:
        if r not in props:
            errors.append(f"{path}: required {r!r} is not among the properties")
    for name, sub in props.items():
        _check_property(f"{path}.{name}", sub, errors)


def check_tool_schema(tool: Any) -> list[str]:
    """Problems with one OpenAI tool schema (empty when it is valid)."""
    if (not isinstance(tool, Mapping) or tool.get("type") != "function"
            or not isinstance(tool.get("function"), Mapping)):
        return ["not a {'type': 'function', 'function': {...}} tool"]
    fn = tool["function"]
    errors: list[str] = []
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        errors.append(f"name {name!r} is not a valid function name")
    if not isinstance(fn.get("description"), str) or not fn["description"].strip():
        errors.append("description must be a non-empty string")
    params = fn.get("parameters")
    if not isinstance(params, Mapping) or params.get("type") != "object":
        errors.append("parameters must be a schema of type object")
    else:
        _check_object(str(name), params, errors)
    return errors


def _validate(path: str, schema: Mapping[str, Any], value: Any, errors: list[str]) -> None:
    json_type = schema["type"]
    if not _type_ok(value, json_type):
        errors.append(f"{path}: expected {json_type}, got {type(value).__name__}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of the enum values")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: below the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: above the maximum {schema['maximum']}")
    if json_type == "array":
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            _validate(f"{path}[{i}]", schema["items"], item, errors)
    if json_type == "object":
        _validate_object(path, schema, value, errors)


def _validate_object(path: str, schema: Mapping[str, Any], value: Mapping[str, Any],
                     errors: list[str]) -> None:
    props = schema.get("properties", {})
    for r in schema.get("required", []):
        if r not in value:
            errors.append(f"{path}: missing required {r!r}")
    for key, item in value.items():
        if key not in props:
            errors.append(f"{path}: unexpected argument {key!r}")
        else:
            _validate(f"{path}.{key}", props[key], item, errors)


def check_arguments(parameters: Mapping[str, Any], arguments: Any) -> list[str]:
    """Problems with ``arguments`` against a tool's ``parameters`` schema (empty when valid)."""
    if not isinstance(arguments, Mapping):
        return ["arguments must be an object"]
    errors: list[str] = []
    _validate_object("arguments", parameters, arguments, errors)
    return errors
