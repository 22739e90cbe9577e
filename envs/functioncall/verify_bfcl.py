"""BFCL's AST checker, for Python-style calls: the stricter judge of function calls.

Follows ``bfcl_eval/eval_checker/ast_eval/ast_checker.py`` (ShishirPatil/gorilla), Python
branch. A gold answer is BFCL's *possible answer*: ``[{func_name: {param: [allowed, ...]}}]``,
one entry per expected call; ``""`` among a parameter's allowed values means it may be omitted.
One call passes its entry when (in this order):

1. the function name is the entry's name;
2. every ``required`` parameter of the schema is present;
3. every given parameter is in the schema's properties *and* in the entry ("unexpected
   parameter" otherwise);
4. its type is the schema's (``type(value) is T``, so ``True`` is not an integer), with an
   integer accepted for a float and converted to it; an array's items are type-checked one
   level deep; a value whose type is that of the allowed values rather than the schema's passes
   too (BFCL's "variable" rule, kept because its answers use it);
5. its value is allowed: strings after BFCL's normalization (drop spaces and ``,./-_*^``,
   lowercase, ``'`` -> ``"``), lists element-wise in order with strings normalized, dicts key by
   key against ``{key: [allowed]}`` (keys whose allowed values include ``""`` may be missing),
   lists of dicts dict by dict, anything else by ``in`` (Python ``==``);
6. every entry parameter missing from the call allows ``""``.

Several calls are matched as BFCL's ``parallel_function_checker_no_order`` does: same count,
then for each gold entry in order the first unmatched call that passes it (greedy, not a
maximum matching). For one call this is BFCL's simple checker.

Types come from OpenAI-style schemas as well as BFCL's own: ``string``, ``integer``,
``number``/``float``, ``boolean``, ``array``/``tuple``, ``object``/``dict``, ``any`` (a string,
as in BFCL). A parameter with no type or another type is not type-checked (BFCL would fail on
it); its value is then compared by its own type's rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BfclVerdict",
    "bfcl_check",
    "calls_from_gold_ast",
    "derive_gold_ast",
    "python_type",
    "standardize_string",
]

_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "object": dict,
    "dict": dict,
    "any": str,
}
_FLOAT_TYPES = ("number", "float")
_STANDARDIZE = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class BfclVerdict:
    """The BFCL checker's outcome: ``valid``, and otherwise every error it found, for ``info``."""
    valid: bool
    errors: tuple[str, ...] = ()


def python_type(schema: Mapping[str, Any]) -> type | None:
    """The Python type BFCL expects for a JSON-schema property, or None when not checked."""
    name = schema.get("type")
    return _PY_TYPES.get(name) if isinstance(name, str) else None


def standardize_string(text: str) -> str:
    """BFCL's ``standardize_string``: "April 1, 2024" and "april 1 2024" compare equal."""
    return _STANDARDIZE.sub("", text).lower().replace("'", '"')


def _std(value: Any) -> Any:
    return standardize_string(value) if isinstance(value, str) else value


def _answer_type(allowed: Sequence[Any]) -> type | None:
    """Type of the first allowed value that is not the optional marker ``""``."""
    for item in allowed:
        if item != "":
            return type(item)
    return None


def _type_ok(value: Any, allowed: Sequence[Any], expected: type, nested: type | None) -> tuple[bool, bool]:
    """BFCL's ``type_checker``: (valid, is_variable)."""
    answer_type = _answer_type(allowed)
    is_variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if nested is None:
            return True, is_variable
        elements: list[Any] = value if isinstance(value, list) else []
        for item in allowed:
            if type(item) is list and not all(_type_ok(v, item, nested, None)[0] for v in elements):
                continue
            return True, is_variable
        return False, is_variable
    if answer_type is not None and type(value) is answer_type:
        return True, True
    return False, is_variable


def _string_ok(value: str, allowed: Sequence[Any]) -> bool:
    return standardize_string(value) in [standardize_string(a) for a in allowed if isinstance(a, str)]


def _list_ok(value: list[Any], allowed: Sequence[Any]) -> bool:
    target = [_std(v) for v in value]
    for item in allowed:
        if isinstance(item, list) and target == [_std(v) for v in item]:
            return True
        if item == "" and target == []:  # BFCL quirk: len("") == 0 reads as an empty list
            return True
    return False


def _dict_ok(value: Mapping[str, Any], allowed: Sequence[Any]) -> str | None:
    """BFCL's ``dict_checker``; None when some allowed dict accepts ``value``, else the error."""
    error = "no allowed value for this dict"
    for option in allowed:
        if option == "" or not isinstance(option, Mapping):
            continue
        error = ""
        for key, item in value.items():
            choices = option.get(key)
            if not isinstance(choices, list):
                error = f"unexpected dict key {key!r}"
                break
            if _std(item) not in [_std(c) for c in choices]:
                error = f"invalid value for dict key {key!r}: {item!r}"
                break
        if not error:
            for key, choices in option.items():
                if key not in value and not (isinstance(choices, list) and "" in choices):
                    error = f"missing dict key {key!r}"
                    break
        if not error:
            return None
    return error


def _list_of_dicts_ok(value: list[Any], allowed: Sequence[Any]) -> str | None:
    error = "no allowed value for this list of dicts"
    for option in allowed:
        if option == "" and not value:  # BFCL quirk: len("") == 0 matches an empty list
            return None
        if not isinstance(option, list) or len(option) != len(value):
            error = "wrong number of dicts in the list"
            continue
        for item, choice in zip(value, option, strict=True):
            sub = _dict_ok(item, [choice]) if isinstance(item, Mapping) else "list item is not a dict"
            if sub is not None:
                error = sub
                break
        else:
            return None
    return error


def _value_error(param: str, value: Any, allowed: Sequence[Any], schema: Mapping[str, Any]) -> str | None:
    """Steps 4 and 5 of the module doc for one parameter; None when it passes."""
    type_name = schema.get("type")
    expected = python_type(schema)
    nested: type | None = None
    items = schema.get("items")
    if expected is list and isinstance(items, Mapping):
        nested = python_type(items)
    if type_name in _FLOAT_TYPES and type(value) is int:
        value = float(value)
    is_variable = False
    if expected is not None:
        ok, is_variable = _type_ok(value, allowed, expected, nested)
        if not ok:
            return f"wrong type for {param!r}: expected {type_name}, got {type(value).__name__} {value!r}"
    kind = expected if expected is not None else type(value)
    if not is_variable:
        if kind is dict and isinstance(value, Mapping):
            sub = _dict_ok(value, allowed)
            return None if sub is None else f"{param!r}: {sub}"
        if kind is list and nested is dict and isinstance(value, list):
            sub = _list_of_dicts_ok(value, allowed)
            return None if sub is None else f"{param!r}: {sub}"
        if kind is str and isinstance(value, str):
            return None if _string_ok(value, allowed) else f"invalid value for {param!r}: {value!r}"
        if kind is list and isinstance(value, list):
            return None if _list_ok(value, allowed) else f"invalid value for {param!r}: {value!r}"
    if value not in allowed:
        return f"invalid value for {param!r}: {value!r}"
    return None


def _check_one(
    call: Mapping[str, Any], entry: Mapping[str, Mapping[str, Sequence[Any]]], parameters: Mapping[str, Any]
) -> str | None:
    """BFCL's ``simple_function_checker``; None when ``call`` passes ``entry``."""
    ((func_name, answer),) = entry.items()
    if call["name"] != func_name:
        return f"function {func_name!r} expected, got {call['name']!r}"
    arguments: Mapping[str, Any] = call["arguments"]
    properties: Mapping[str, Any] = parameters.get("properties") or {}
    for param in parameters.get("required") or []:
        if param not in arguments:
            return f"{func_name}: missing required parameter {param!r}"
    for param, value in arguments.items():
        if param not in properties or param not in answer:
            return f"{func_name}: unexpected parameter {param!r}"
        error = _value_error(param, value, answer[param], properties[param])
        if error is not None:
            return f"{func_name}: {error}"
    for param, allowed in answer.items():
        if param not in arguments and "" not in allowed:
            return f"{func_name}: parameter {param!r} is missing and not optional"
    return None


def bfcl_check(
    calls: Sequence[Mapping[str, Any]],
    gold_ast: Sequence[Mapping[str, Mapping[str, Sequence[Any]]]],
    tools: Sequence[Mapping[str, Any]],
) -> BfclVerdict:
    """Whether ``calls`` pass ``gold_ast`` (see the module doc); ``tools`` are OpenAI schemas."""
    if len(calls) != len(gold_ast):
        return BfclVerdict(False, (f"wrong number of calls: expected {len(gold_ast)}, got {len(calls)}",))
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
    matched: set[int] = set()
    for i, entry in enumerate(gold_ast):
        (func_name,) = entry
        parameters = schemas.get(func_name, {})
        errors: list[str] = []
        for index, call in enumerate(calls):
            if index in matched:
                continue
            error = _check_one(call, entry, parameters)
            if error is None:
                matched.add(index)
                break
            errors.append(f"call {index}: {error}")
        else:
            return BfclVerdict(False, (f"no call matches gold entry {i} ({func_name})", *errors))
    return BfclVerdict(True)


# --- possible answers from plain gold calls, and back ----------------------------------------


def _allowed_for(value: Any, schema: Mapping[str, Any]) -> list[Any]:
    """The allowed-value list that accepts exactly ``value`` (BFCL's answer shape per type)."""
    expected = python_type(schema)
    items = schema.get("items")
    if expected is dict and isinstance(value, dict):
        return [{k: [v] for k, v in value.items()}]
    if (
        expected is list
        and isinstance(items, Mapping)
        and python_type(items) is dict
        and isinstance(value, list)
        and all(isinstance(v, dict) for v in value)
    ):
        return [[{k: [x] for k, x in v.items()} for v in value]]
    if schema.get("type") in _FLOAT_TYPES and type(value) is int:
        return [float(value)]
    return [value]


def derive_gold_ast(
    gold_calls: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, dict[str, list[Any]]]]:
    """BFCL's answer form for gold calls without one.

    Each given value allowed exactly; each optional parameter the gold omits allowed to be
    omitted (``""``) or given its schema ``default``; a gold value equal to the schema default
    may also be omitted.
    """
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
    out: list[dict[str, dict[str, list[Any]]]] = []
    for call in gold_calls:
        parameters = schemas.get(call["name"], {})
        properties: Mapping[str, Any] = parameters.get("properties") or {}
        required = set(parameters.get("required") or [])
        answer: dict[str, list[Any]] = {}
        for param, schema in properties.items():
            has_default = isinstance(schema, Mapping) and "default" in schema
            if param in call["arguments"]:
                value = call["arguments"][param]
                allowed = _allowed_for(value, schema)
                if param not in required and has_default and schema["default"] == value:
                    allowed.append("")
                answer[param] = allowed
            elif param not in required:
                answer[param] = ["", schema["default"]] if has_default else [""]
        for param, value in call["arguments"].items():
            if param not in properties:  # the record validator rejects this; keep it visible
                answer[param] = [value]
        out.append({call["name"]: answer})
    return out


def _first_allowed(allowed: Sequence[Any]) -> tuple[bool, Any]:
    for item in allowed:
        if item != "":
            return True, item
    return False, None


def _in_enum_first(allowed: Sequence[Any], schema: Mapping[str, Any]) -> list[Any]:
    """Allowed values that the schema's ``enum`` lists come first.

    BFCL's answers sometimes list a spelling the enum does not have before one it has.
    """
    enum = schema.get("enum")
    if not isinstance(enum, list):
        return list(allowed)
    listed = [a for a in allowed if any(type(a) is type(e) and a == e for e in enum)]
    return listed + [a for a in allowed if a not in listed]


def _concrete(option: Any) -> Any:
    """A dict from ``{key: [allowed]}``: each key's first non-optional value."""
    if not isinstance(option, Mapping):
        return option
    out: dict[str, Any] = {}
    for key, choices in option.items():
        if isinstance(choices, list):
            found, value = _first_allowed(choices)
            if found and "" not in choices:
                out[key] = value
    return out


def calls_from_gold_ast(
    gold_ast: Sequence[Mapping[str, Mapping[str, Sequence[Any]]]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One concrete call per possible answer, for the LoopTool rule.

    An optional parameter that may be omitted (``""`` allowed) is left out, as the shortest
    right call would; any other takes its first allowed value (inside a dict too).
    """
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
    out: list[dict[str, Any]] = []
    for entry in gold_ast:
        ((name, answer),) = entry.items()
        parameters = schemas.get(name, {})
        properties: Mapping[str, Any] = parameters.get("properties") or {}
        required = set(parameters.get("required") or [])
        arguments: dict[str, Any] = {}
        for param, allowed in answer.items():
            schema = properties.get(param) or {}
            found, value = _first_allowed(_in_enum_first(allowed, schema))
            if not found or ("" in allowed and param not in required):
                continue
            expected = python_type(schema)
            items = schema.get("items")
            if expected is dict:
                value = _concrete(value)
            elif expected is list and isinstance(items, Mapping) and python_type(items) is dict:
                value = [_concrete(v) for v in value] if isinstance(value, list) else value
            arguments[param] = value
        out.append({"name": name, "arguments": arguments})
    return out
