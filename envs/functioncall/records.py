"""Task records of ``toolgym/FunctionCall-v0``: checked, normalized, and self-consistent.

A record is ``{messages, tools, gold_calls: [{name, arguments}]}`` or
``{messages, tools, gold_text: true}``; optional ``id`` and ``split`` (dropped here: the
server keeps them), ``gold_ast`` (BFCL's possible-answer form, for the ``bfcl`` verifier),
``slots`` (values ``variants`` may substitute, see ``variants.py``) and ``metadata`` (free JSON
shown in the task list). ``tools`` are OpenAI schemas ``{"type": "function", "function":
{...}}`` or bare ``{name, description, parameters}``, and come out in the OpenAI form.

Beyond shapes, the gold must make sense against the tools: every gold call names a tool,
gives every required parameter, no unknown one, and values of the schema's type (and in its
``enum``); and the gold calls must pass the ``bfcl`` verifier against the record's own answer
(``gold_ast`` when given, else the one derived from the gold calls). A gold that cannot earn
reward 1 would only teach noise, so it is refused here, naming the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from toolgym.envs.functioncall.values import ValueProblem, check_value, describe_type
from toolgym.envs.functioncall.verify_bfcl import bfcl_check, derive_gold_ast
from toolgym.errors import ValidationFailed

__all__ = ["RECORD_FIELDS", "gold_ast_of", "normalize_tools", "validate_record"]

RECORD_FIELDS = (
    "id",
    "split",
    "messages",
    "tools",
    "gold_calls",
    "gold_text",
    "gold_ast",
    "slots",
    "metadata",
)
ROLES = ("system", "user", "assistant", "tool")

_TYPE_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "any": (str,),
    "integer": (int,),
    "number": (int, float),
    "float": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "tuple": (list,),
    "object": (dict,),
    "dict": (dict,),
}


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", field=field)


def _maybe_json(value: Any, field: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise _fail(field, f"is a string that is not valid JSON ({exc})") from exc
    return value


def _normalize_tool(raw: Any, field: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _fail(field, "must be an object")
    if raw.get("type") == "function" and "function" in raw:
        fn = raw["function"]
        field = f"{field}.function"
        if not isinstance(fn, Mapping):
            raise _fail(field, "must be an object")
    elif "name" in raw:
        fn = raw
    else:
        raise _fail(
            field, 'must be {"type": "function", "function": {...}} or {"name", "description", "parameters"}'
        )
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"{field}.name", "must be a non-empty string")
    description = fn.get("description", "")
    if not isinstance(description, str):
        raise _fail(f"{field}.description", "must be a string")
    parameters = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, Mapping):
        raise _fail(f"{field}.parameters", "must be an object")
    if parameters.get("type", "object") not in ("object", "dict"):
        raise _fail(f"{field}.parameters.type", "must be 'object'")
    properties = parameters.get("properties", {})
    if not isinstance(properties, Mapping) or not all(isinstance(v, Mapping) for v in properties.values()):
        raise _fail(f"{field}.parameters.properties", "must be an object of property schemas")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _fail(f"{field}.parameters.required", "must be a list of strings")
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise _fail(f"{field}.parameters.required", f"names parameters not in properties: {unknown}")
    try:
        check_value(dict(fn), field)
    except ValueProblem as exc:
        raise _fail(exc.path, exc.message) from exc
    function = copy.deepcopy(dict(fn))
    function["name"] = name
    function["description"] = description
    function["parameters"] = {
        **copy.deepcopy(dict(parameters)),
        "type": "object",
        "properties": copy.deepcopy(dict(properties)),
        "required": list(required),
    }
    return {"type": "function", "function": function}


def normalize_tools(raw: Any, field: str = "tools") -> list[dict[str, Any]]:
    """Tools in the OpenAI form, names unique. ``raw`` may be a list or a JSON string of one."""
    raw = _maybe_json(raw, field)
    if not isinstance(raw, list) or not raw:
        raise _fail(field, "must be a non-empty list of tool schemas")
    tools = [_normalize_tool(t, f"{field}[{i}]") for i, t in enumerate(raw)]
    names = [t["function"]["name"] for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(field, f"tool names must be unique, repeated: {duplicates}")
    return tools


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _fail("messages", "must be a non-empty list of chat messages")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        field = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise _fail(field, "must be an object")
        if msg.get("role") not in ROLES:
            raise _fail(f"{field}.role", f"must be one of {list(ROLES)}")
        if not isinstance(msg.get("content"), str):
            raise _fail(f"{field}.content", "must be a string")
        try:
            check_value(dict(msg), field)
        except ValueProblem as exc:
            raise _fail(exc.path, exc.message) from exc
        out.append(copy.deepcopy(dict(msg)))
    if not any(m["role"] == "user" for m in out):
        raise _fail("messages", "must contain a user message")
    if out[-1]["role"] == "assistant":
        raise _fail(f"messages[{len(out) - 1}].role", "the last message must not be the assistant's")
    return out


def _check_schema_value(value: Any, schema: Mapping[str, Any], field: str, depth: int = 0) -> None:
    type_name = schema.get("type")
    accepted = _TYPE_CHECKS.get(type_name) if isinstance(type_name, str) else None
    if accepted is not None:
        is_bool = isinstance(value, bool)
        if not isinstance(value, accepted) or (is_bool and bool not in accepted):
            raise _fail(
                field, f"the schema says {type_name}, the gold gives {describe_type(value)} {value!r}"
            )
    enum = schema.get("enum")
    if isinstance(enum, list) and isinstance(value, list) and not any(isinstance(e, list) for e in enum):
        # An enum of scalars on an array constrains its items (as BFCL's docs use it).
        for i, item in enumerate(value):
            _check_schema_value(item, {"enum": enum}, f"{field}[{i}]", depth + 1)
    elif isinstance(enum, list) and not any(type(value) is type(e) and value == e for e in enum):
        raise _fail(field, f"{value!r} is not one of the schema's enum {enum}")
    items = schema.get("items")
    if depth == 0 and isinstance(value, list) and isinstance(items, Mapping):
        for i, item in enumerate(value):
            _check_schema_value(item, items, f"{field}[{i}]", depth + 1)


def _gold_calls(raw: Any, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _fail(
            "gold_calls", "must be a non-empty list of {name, arguments} (use gold_text for a text answer)"
        )
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    out: list[dict[str, Any]] = []
    for i, call in enumerate(raw):
        field = f"gold_calls[{i}]"
        if not isinstance(call, Mapping):
            raise _fail(field, "must be an object {name, arguments}")
        extra = sorted(set(call) - {"name", "arguments"})
        if extra:
            raise _fail(field, f"has keys other than name and arguments: {extra}")
        name = call.get("name")
        if not isinstance(name, str) or name not in schemas:
            raise _fail(f"{field}.name", f"{name!r} is not one of the tools {sorted(schemas)}")
        arguments = _maybe_json(call.get("arguments", {}), f"{field}.arguments")
        if not isinstance(arguments, dict):
            raise _fail(f"{field}.arguments", "must be an object")
        try:
            check_value(arguments, f"{field}.arguments")
        except ValueProblem as exc:
            raise _fail(exc.path, exc.message) from exc
        params = schemas[name]
        for param in params["required"]:
            if param not in arguments:
                raise _fail(f"{field}.arguments", f"lacks the required parameter {param!r} of {name}")
        for param, value in arguments.items():
            if param not in params["properties"]:
                raise _fail(f"{field}.arguments.{param}", f"{name} has no parameter {param!r}")
            _check_schema_value(value, params["properties"][param], f"{field}.arguments.{param}")
        out.append({"name": name, "arguments": copy.deepcopy(arguments)})
    return out


def _gold_ast(raw: Any, n_calls: int, tools: list[dict[str, Any]]) -> list[dict[str, dict[str, list[Any]]]]:
    names = {t["function"]["name"] for t in tools}
    if not isinstance(raw, list) or len(raw) != n_calls:
        raise _fail("gold_ast", f"must be a list of {n_calls} possible answers, one per gold call")
    for i, entry in enumerate(raw):
        field = f"gold_ast[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _fail(field, "must be an object with exactly one key, the function name")
        ((name, answer),) = entry.items()
        if name not in names:
            raise _fail(field, f"{name!r} is not one of the tools")
        if not isinstance(answer, dict) or not all(isinstance(v, list) for v in answer.values()):
            raise _fail(f"{field}.{name}", "must map each parameter to a list of allowed values")
    try:
        check_value(raw, "gold_ast")
    except ValueProblem as exc:
        raise _fail(exc.path, exc.message) from exc
    return copy.deepcopy(raw)


def _slots(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise _fail("slots", "must be a list of {value, alternatives}")
    for i, slot in enumerate(raw):
        field = f"slots[{i}]"
        if not isinstance(slot, Mapping) or set(slot) != {"value", "alternatives"}:
            raise _fail(field, "must be an object {value, alternatives}")
        value, alternatives = slot["value"], slot["alternatives"]
        if not (isinstance(value, str) and value) and not (
            isinstance(value, int) and not isinstance(value, bool)
        ):
            raise _fail(f"{field}.value", "must be a non-empty string or an integer")
        if (
            not isinstance(alternatives, list)
            or not alternatives
            or not all(type(a) is type(value) and a != value for a in alternatives)
        ):
            raise _fail(
                f"{field}.alternatives", f"must be a non-empty list of other {describe_type(value)} values"
            )
    return copy.deepcopy(raw)


def gold_ast_of(record: Mapping[str, Any]) -> list[dict[str, dict[str, list[Any]]]]:
    """The record's BFCL answer: its ``gold_ast``, or the one derived from ``gold_calls``."""
    given = record.get("gold_ast")
    if given is not None:
        return given  # type: ignore[no-any-return]
    return derive_gold_ast(record["gold_calls"], record["tools"])


def validate_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalize one record (module doc); raises ``ValidationFailed`` naming the field."""
    if not isinstance(record, Mapping):
        raise ValidationFailed("a task record must be a JSON object")
    unknown = sorted(set(record) - set(RECORD_FIELDS))
    if unknown:
        raise ValidationFailed(
            f"unknown field(s) {unknown}; a FunctionCall record has {list(RECORD_FIELDS)}", field=unknown[0]
        )
    for key in ("messages", "tools"):
        if key not in record:
            raise _fail(key, "is required")
    out: dict[str, Any] = {
        "messages": _messages(record["messages"]),
        "tools": normalize_tools(record["tools"]),
    }
    has_calls = record.get("gold_calls") is not None
    gold_text = record.get("gold_text")
    if gold_text is not None and gold_text is not True:
        raise _fail("gold_text", "must be true when present")
    if has_calls == (gold_text is True):
        raise _fail("gold_calls", "give exactly one of gold_calls and gold_text: true")
    if gold_text:
        out["gold_text"] = True
        if record.get("gold_ast") is not None:
            raise _fail("gold_ast", "goes with gold_calls, not with gold_text")
    else:
        out["gold_calls"] = _gold_calls(record["gold_calls"], out["tools"])
        if record.get("gold_ast") is not None:
            out["gold_ast"] = _gold_ast(record["gold_ast"], len(out["gold_calls"]), out["tools"])
        verdict = bfcl_check(out["gold_calls"], gold_ast_of(out), out["tools"])
        if not verdict.valid:
            source = "gold_ast" if "gold_ast" in out else "the answer derived from them"
            raise _fail(
                "gold_calls", f"do not pass the bfcl verifier against {source}: {'; '.join(verdict.errors)}"
            )
    if record.get("slots") is not None:
        out["slots"] = _slots(record["slots"])
    if record.get("metadata") is not None:
        metadata = record["metadata"]
        if not isinstance(metadata, dict):
            raise _fail("metadata", "must be an object")
        try:
            check_value(metadata, "metadata")
        except ValueProblem as exc:
            raise _fail(exc.path, exc.message) from exc
        out["metadata"] = copy.deepcopy(metadata)
    return out
