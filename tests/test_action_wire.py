"""``toolgym.actions``: the one converter between wire actions and the env ``Action``.

The live routes and clients are tested against a server in tests/server/test_action_shapes.py
and tests/client/test_action_shapes.py; here: the rule itself, the round trip a fork relies on,
and that no other module builds an ``AssistantMessage`` out of wire data on its own.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from toolgym.actions import ACTION_SHAPE, AssistantMessage, action_chars, action_from_wire, action_to_wire
from toolgym.errors import ValidationFailed, http_status

ROOT = Path(__file__).resolve().parents[1]
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}


@pytest.mark.parametrize(("raw", "why"), [
    ({"foo": "bar"}, "unknown key(s) ['foo']"),
    ({}, "needs content or tool_calls"),
    ({"role": "assistant", "reasoning_content": "r"}, "needs content or tool_calls"),
    ({"role": "tool", "content": "x"}, "role must be 'assistant'"),
    ({"content": ["x"]}, "content must be a string or null"),
    ({"tool_calls": {"a": 1}}, "tool_calls must be a list of objects"),
    ({"tool_calls": [1]}, "tool_calls must be a list of objects"),
    ([], "got list"),
    (b"bytes", "got bytes"),
    (None, "got NoneType"),
])
def test_bad_shapes_are_refused_with_the_reason(raw: Any, why: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        action_from_wire(raw, "response")
    message = refused.value.message
    assert message.startswith("response is not a valid action (") and why in message and ACTION_SHAPE in message
    assert http_status(refused.value) == 422


@pytest.mark.parametrize(("raw", "action"), [
    ("plain text", "plain text"),
    ({"content": None}, AssistantMessage(None, ())),
    ({"content": "hi", "tool_calls": None}, AssistantMessage("hi", ())),
    ({"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None},
     AssistantMessage(None, (CALL,))),
    (AssistantMessage("x", (CALL,)), AssistantMessage("x", (CALL,))),
])
def test_valid_shapes_convert_and_round_trip(raw: Any, action: Any) -> None:
    assert action_from_wire(raw) == action
    assert action_from_wire(action_to_wire(action)) == action


def test_size_counts_text_and_calls() -> None:
    assert action_chars("abc") == 3
    assert action_chars(AssistantMessage("ab", (CALL,))) == 2 + len('[{"id": "c1", "type": "function", '
                                                                      '"function": {"name": "f", '
                                                                      '"arguments": "{\\"x\\": 1}"}}]')


def test_only_the_converter_builds_assistant_messages_outside_the_env_families() -> None:
    builders = []
    for folder in ("server", "client", "toolgym"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "toolgym" / "actions.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AssistantMessage":
                    builders.append(str(path.relative_to(ROOT)))
    assert builders == []
