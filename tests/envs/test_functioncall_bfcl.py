"""The ``bfcl`` verifier on its own table (BFCL ``ast_checker.py``, Python branch), the answer it
derives from plain gold calls, and loading BFCL's data files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from toolgym.envs.functioncall import bfcl_check, derive_gold_ast, load_bfcl, validate_record
from toolgym.envs.functioncall.verify_bfcl import calls_from_gold_ast, standardize_string
from toolgym.errors import ValidationFailed


def tool(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": name,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


TOOLS = [
    tool(
        "get_weather",
        {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            "date": {"type": "string"},
        },
        ["city"],
    ),
    tool("set_temp", {"temp": {"type": "number"}}, ["temp"]),
    tool(
        "add_item",
        {
            "qty": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "opts": {"type": "object"},
            "flag": {"type": "boolean"},
        },
        ["qty"],
    ),
]


def c(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def ok(predicted: list[dict[str, Any]], gold: list[dict[str, Any]]) -> bool:
    return bfcl_check(predicted, derive_gold_ast(gold, TOOLS), TOOLS).valid


PARIS = c("get_weather", city="Paris")
ITEM = c("add_item", qty=2, tags=["red", "big"], opts={"gift": True, "note": "Hi there"})

# (case, gold calls, predicted calls, valid) -- the gold answer derived from the gold calls.
CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], bool]] = [
    ("exact", [PARIS], [PARIS], True),
    (
        "string case and spaces normalized",
        [c("get_weather", city="New York")],
        [c("get_weather", city="new-york")],
        True,
    ),
    (
        "string punctuation ,./-_*^ dropped",
        [c("get_weather", city="St. Louis")],
        [c("get_weather", city="st louis")],
        True,
    ),
    ("string really different", [PARIS], [c("get_weather", city="Lyon")], False),
    ("optional omitted by gold may be omitted", [PARIS], [PARIS], True),
    (
        "optional omitted by gold may be given its default",
        [PARIS],
        [c("get_weather", city="Paris", unit="celsius")],
        True,
    ),
    (
        "optional omitted by gold, other value given",
        [PARIS],
        [c("get_weather", city="Paris", unit="fahrenheit")],
        False,
    ),
    (
        "gold gives the default: omission allowed",
        [c("get_weather", city="Paris", unit="celsius")],
        [PARIS],
        True,
    ),
    (
        "gold gives a non-default optional: required",
        [c("get_weather", city="Paris", unit="fahrenheit")],
        [PARIS],
        False,
    ),
    ("missing required", [PARIS], [c("get_weather", unit="celsius")], False),
    ("unknown parameter", [PARIS], [c("get_weather", city="Paris", country="FR")], False),
    ("int accepted for float", [c("set_temp", temp=20.0)], [c("set_temp", temp=20)], True),
    ("int gold for number param", [c("set_temp", temp=20)], [c("set_temp", temp=20.0)], True),
    ("float rejected for integer", [ITEM], [{**ITEM, "arguments": {**ITEM["arguments"], "qty": 2.0}}], False),
    ("bool rejected for integer", [c("add_item", qty=1)], [c("add_item", qty=True)], False),
    ('"2" rejected for integer', [c("add_item", qty=2)], [c("add_item", qty="2")], False),
    ("string rejected for number", [c("set_temp", temp=20.5)], [c("set_temp", temp="20.5")], False),
    (
        "list order matters (unlike LoopTool)",
        [ITEM],
        [{**ITEM, "arguments": {**ITEM["arguments"], "tags": ["big", "red"]}}],
        False,
    ),
    (
        "list strings normalized",
        [ITEM],
        [{**ITEM, "arguments": {**ITEM["arguments"], "tags": ["RED", "b-i-g"]}}],
        True,
    ),
    (
        "list item type checked",
        [ITEM],
        [{**ITEM, "arguments": {**ITEM["arguments"], "tags": ["red", 1]}}],
        False,
    ),
    (
        "dict values normalized",
        [ITEM],
        [{**ITEM, "arguments": {**ITEM["arguments"], "opts": {"note": "hi there", "gift": True}}}],
        True,
    ),
    (
        "dict key missing",
        [ITEM],
        [{**ITEM, "arguments": {**ITEM["arguments"], "opts": {"gift": True}}}],
        False,
    ),
    (
        "dict key extra",
        [ITEM],
        [{**ITEM, "arguments": {**ITEM["arguments"], "opts": {"gift": True, "note": "Hi there", "x": 1}}}],
        False,
    ),
    ("parallel, order-insensitive", [PARIS, c("set_temp", temp=3.5)], [c("set_temp", temp=3.5), PARIS], True),
    ("parallel, wrong count", [PARIS, c("set_temp", temp=3.5)], [PARIS], False),
    ("duplicates [A,A] vs [A,B]", [PARIS, PARIS], [PARIS, c("get_weather", city="Rome")], False),
    ("duplicates [A,A] vs [A,A]", [PARIS, PARIS], [PARIS, PARIS], True),
    ("wrong function", [PARIS], [c("set_temp", temp=1.0)], False),
]


@pytest.mark.parametrize(("case", "gold", "predicted", "valid"), CASES, ids=[x[0] for x in CASES])
def test_bfcl_rule(
    case: str, gold: list[dict[str, Any]], predicted: list[dict[str, Any]], valid: bool
) -> None:
    assert ok(predicted, gold) is valid


def test_allowed_values_from_gold_ast() -> None:
    gold_ast = [
        {
            "get_weather": {
                "city": ["Paris", "Paris, France"],
                "date": ["2024-01-01", "Jan 1, 2024"],
                "unit": [""],
            }
        }
    ]
    assert bfcl_check([c("get_weather", city="paris france", date="jan 1 2024")], gold_ast, TOOLS).valid
    assert bfcl_check([c("get_weather", city="Paris", date="2024-01-01")], gold_ast, TOOLS).valid
    assert not bfcl_check([c("get_weather", city="Paris", date="2024-01-02")], gold_ast, TOOLS).valid
    missing = [{"get_weather": {"city": ["Paris"], "date": ["2024-01-01"]}}]
    verdict = bfcl_check([c("get_weather", city="Paris")], missing, TOOLS)
    assert not verdict.valid and "date" in verdict.errors[-1]


def test_parallel_matching_is_greedy_like_bfcl() -> None:
    """BFCL takes, for each gold entry in order, the first unmatched call that passes: with
    entry 0 allowing Paris or Lyon and entry 1 only Paris, [Paris, Lyon] fails, as in BFCL."""
    gold_ast = [{"get_weather": {"city": ["Paris", "Lyon"]}}, {"get_weather": {"city": ["Paris"]}}]
    assert not bfcl_check(
        [c("get_weather", city="Paris"), c("get_weather", city="Lyon")], gold_ast, TOOLS
    ).valid
    assert bfcl_check([c("get_weather", city="Lyon"), c("get_weather", city="Paris")], gold_ast, TOOLS).valid


def test_variable_rule() -> None:
    """A value of the answer's type rather than the schema's passes (BFCL's variable case)."""
    gold_ast = [{"add_item": {"qty": ["n_items"]}}]
    assert bfcl_check([c("add_item", qty="n_items")], gold_ast, TOOLS).valid


def test_standardize_string() -> None:
    assert standardize_string("April 1, 2024") == standardize_string("april 1 2024") == "april12024"
    assert standardize_string("it's") == 'it"s'


def test_derive_gold_ast_shape() -> None:
    derived = derive_gold_ast([ITEM, c("get_weather", city="Paris", unit="celsius")], TOOLS)
    assert derived[0] == {
        "add_item": {
            "qty": [2],
            "tags": [["red", "big"]],
            "opts": [{"gift": [True], "note": ["Hi there"]}],
            "flag": [""],
        }
    }
    assert derived[1] == {"get_weather": {"city": ["Paris"], "unit": ["celsius", ""], "date": [""]}}


def test_calls_from_gold_ast_prefers_omission_and_enum() -> None:
    tools = [
        tool(
            "f",
            {"u": {"type": "string", "enum": ["A", "B"]}, "o": {"type": "string"}, "r": {"type": "string"}},
            ["r"],
        )
    ]
    gold_ast = [{"f": {"u": ["a", "A"], "o": ["x", ""], "r": ["", "req"]}}]
    assert calls_from_gold_ast(gold_ast, tools) == [{"name": "f", "arguments": {"u": "A", "r": "req"}}]


def test_record_gold_ast_must_accept_gold_calls() -> None:
    record = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS,
        "gold_calls": [PARIS],
        "gold_ast": [{"get_weather": {"city": ["Lyon"]}}],
    }
    with pytest.raises(ValidationFailed) as exc:
        validate_record(record)
    assert exc.value.details["field"] == "gold_calls"


# --- BFCL's files ---------------------------------------------------------------------------

BFCL_FUNCTION = {
    "name": "calc.area",
    "description": "Area of a triangle.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer", "description": "Base."},
            "height": {"type": "float", "description": "Height."},
            "unit": {"type": "string", "description": "Unit.", "default": "units"},
            "dims": {"type": "tuple", "items": {"type": "integer"}, "description": "Dims."},
        },
        "required": ["base", "height"],
    },
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_bfcl(tmp_path: Path) -> None:
    questions = write_jsonl(
        tmp_path / "q.json",
        [
            {
                "id": "simple_0",
                "question": [[{"role": "user", "content": "Area, base 10, height 5?"}]],
                "function": [BFCL_FUNCTION],
            },
            {
                "id": "simple_1",
                "question": [[{"role": "user", "content": "Base 3 height 4.5 in cm."}]],
                "function": [BFCL_FUNCTION],
            },
        ],
    )
    answers = write_jsonl(
        tmp_path / "a.json",
        [
            {
                "id": "simple_0",
                "ground_truth": [{"calc.area": {"base": [10], "height": [5.0], "unit": ["units", ""]}}],
            },
            {
                "id": "simple_1",
                "ground_truth": [
                    {"calc.area": {"base": [3], "height": [4.5], "unit": ["cm", "centimeters"]}}
                ],
            },
        ],
    )
    records = load_bfcl(questions, answers)
    assert [r["id"] for r in records] == ["simple_0", "simple_1"]
    first = records[0]
    params = first["tools"][0]["function"]["parameters"]
    assert params["type"] == "object"
    assert params["properties"]["height"]["type"] == "number"
    assert params["properties"]["dims"]["type"] == "array"
    assert first["gold_calls"] == [{"name": "calc.area", "arguments": {"base": 10, "height": 5.0}}]
    assert records[1]["gold_calls"][0]["arguments"]["unit"] == "cm"
    normalized = validate_record(first)
    assert bfcl_check(
        [c("calc.area", base=10, height=5, unit="units")], normalized["gold_ast"], normalized["tools"]
    ).valid
    assert bfcl_check([c("calc.area", base=10, height=5)], normalized["gold_ast"], normalized["tools"]).valid
    assert not bfcl_check(
        [c("calc.area", base=10, height=5, unit="m")], normalized["gold_ast"], normalized["tools"]
    ).valid


def test_load_bfcl_irrelevance_and_errors(tmp_path: Path) -> None:
    questions = write_jsonl(
        tmp_path / "q.json",
        [
            {
                "id": "irrelevance_0",
                "question": [[{"role": "user", "content": "Tell me a joke."}]],
                "function": [BFCL_FUNCTION],
            }
        ],
    )
    [record] = load_bfcl(questions)
    assert record["gold_text"] is True and "gold_calls" not in record
    empty = write_jsonl(tmp_path / "none.json", [])
    with pytest.raises(ValidationFailed, match="no possible answer"):
        load_bfcl(questions, empty)
    assert load_bfcl(questions, empty, on_error="skip") == []
    multi = write_jsonl(
        tmp_path / "multi.json",
        [
            {
                "id": "m_0",
                "question": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
                "function": [BFCL_FUNCTION],
            }
        ],
    )
    with pytest.raises(ValidationFailed, match="multi-turn"):
        load_bfcl(multi)
