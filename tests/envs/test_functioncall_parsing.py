"""Reading actions: the three forms, ``</think>``, and hostile input that must come back as a
clear ``invalid_action`` without anything being evaluated."""

from __future__ import annotations

import builtins
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

from toolgym.envs.base import AssistantMessage
from toolgym.envs.functioncall import parse_response
from toolgym.envs.functioncall.parsing import MAX_RESPONSE_CHARS, tag_blocks


def calls(action: Any) -> list[dict[str, Any]]:
    parsed = parse_response(action)
    assert parsed.valid, parsed.problems
    return parsed.calls_as_dicts()


def problems(action: Any) -> tuple[str, ...]:
    parsed = parse_response(action)
    assert not parsed.valid
    assert parsed.calls == () or parsed.problems
    return parsed.problems


W = {"name": "get_weather", "arguments": {"city": "Paris"}}


# --- Qwen tags --------------------------------------------------------------------------------


def test_tags_one_and_several() -> None:
    add = {"name": "add", "arguments": {"a": 1, "b": 2.5}}
    text = f"<tool_call>\n{json.dumps(W)}\n</tool_call>\n<tool_call>\n{json.dumps(add)}\n</tool_call>"
    assert calls(text) == [W, add]
    assert parse_response(text).form == "tags"


def test_tags_need_the_newlines_like_looptool() -> None:
    found = problems(f"<tool_call>{json.dumps(W)}</tool_call>")
    assert "newlines are required" in found[0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"name": "f", "arguments": {"a": 1}', "not valid JSON"),
        ('["f", {}]', "JSON object"),
        ('{"name": "f", "arguments": {}, "id": "x"}', "exactly the keys"),
        ('{"name": "f", "parameters": {}}', "exactly the keys"),
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', "'arguments' must be a JSON object"),
        ('{"name": "", "arguments": {}}', "non-empty string"),
        ('{"name": "f", "arguments": {"a": NaN}}', "not valid JSON"),
        ('{"name": "f", "arguments": {"a": ' + "[" * 5000 + "]" * 5000 + "}}", "not valid JSON"),
        ('{"name": "f", "arguments": {"a": ' + "[" * 40 + "]" * 40 + "}}", "nested more than"),
    ],
)
def test_tags_malformed(body: str, needle: str) -> None:
    found = problems(f"<tool_call>\n{body}\n</tool_call>")
    assert any(needle in p for p in found), found


def test_end_tokens() -> None:
    text = f"<tool_call>\n{json.dumps(W)}\n</tool_call><|im_end|>\njunk <tool_call>"
    assert calls(text) == [W]
    assert calls(f"<tool_call>\n{json.dumps(W)}\n</tool_call><|endoftext|>") == [W]


# --- </think> ---------------------------------------------------------------------------------


def test_reasoning_dropped() -> None:
    text = '<think>I could call <tool_call>\n{"name": "x", "arguments": {}}\n</tool_call></think>\n\n' + (
        f"<tool_call>\n{json.dumps(W)}\n</tool_call>"
    )
    assert calls(text) == [W]


def test_last_think_close_wins_and_unclosed_think_is_kept() -> None:
    assert parse_response("<think>a</think>b</think>\nanswer").response == "answer"
    parsed = parse_response("<think>still thinking about [f(a=1)]")
    assert parsed.form == "text" and parsed.calls == ()


# --- Python call lists ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[get_weather(city="Paris")]', [W]),
        ('get_weather(city="Paris")', [W]),
        ("```python\n[get_weather(city='Paris')]\n```", [W]),
        ("[]", []),
        ("[ ]", []),
        (
            '[add(a=1, b=-2.5), math.factorial(n=+5), f(x=[1, (2, 3)], d={"k": None, "t": True})]',
            [
                {"name": "add", "arguments": {"a": 1, "b": -2.5}},
                {"name": "math.factorial", "arguments": {"n": 5}},
                {"name": "f", "arguments": {"x": [1, [2, 3]], "d": {"k": None, "t": True}}},
            ],
        ),
        ("[ping()]", [{"name": "ping", "arguments": {}}]),
    ],
)
def test_python_calls(text: str, expected: list[dict[str, Any]]) -> None:
    assert calls(text) == expected
    assert parse_response(text).form == "python"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[f(x=__import__('os'))]", "not a literal"),
        ("[f(x=open('/etc/passwd').read())]", "not a literal"),
        ("[f(x=Paris)]", "bare name 'Paris'"),
        ("[f(x=true)]", "bare name 'true'"),
        ("[f(x=1+1)]", "BinOp"),
        ("[f(x=lambda: 1)]", "Lambda"),
        ("[f(x=f'{1}')]", "JoinedStr"),
        ("[f(x={1, 2})]", "Set"),
        ("[f(x=a[0])]", "Subscript"),
        ("[f(x=os.sep)]", "Attribute"),
        ("[f(x=--1)]", "sign applies only"),
        ("[f(x=1j)]", "complex"),
        ("[f(x=b'a')]", "bytes"),
        ("[f(x=...)]", "ellipsis"),
        ("[f(x=1e999)]", "finite"),
        ("[f(x={1: 2})]", "string literals"),
        ("[f(**{'a': 1})]", "unpacking"),
        ("[f(1, 2)]", "positional"),
        ("[f(a=1, a=2)]", "given twice"),
        ("[f(a=1), 3]", "not a function call"),
        ("[f(a=1)(b=2)]", "(dotted) name"),
        ("[f(a=1), g(b=2]", "does not parse"),
        ("[f(a=" + "[" * 300 + "]" * 300 + ")]", "does not parse"),
        ("[f(a=" + "[" * 60 + "]" * 60 + ")]", "nested more than"),
        ("[f(a=" + "-" * 10_000 + "1)]", "does not parse"),
        ("[f(a=1" + "+1" * 10_000 + ")]", "does not parse"),
        ("[f(a=" + "9" * 5000 + ")]", "does not parse"),
        ("[f(a='\x00')]", "does not parse"),
    ],
)
def test_python_malformed(text: str, needle: str) -> None:
    found = problems(text)
    assert any(needle.lower() in p.lower() for p in found), found
    assert parse_response(text).form == "python"


@pytest.mark.parametrize(
    "text",
    [
        "Sure, it is sunny in Paris.",
        "I (think) it will rain.",
        "Note (important): no tool fits.",
        "[1, 2, 3] are the numbers.",
        "",
    ],
)
def test_plain_text_is_not_read_as_code(text: str) -> None:
    parsed = parse_response(text)
    assert parsed.valid and parsed.form == "text" and parsed.calls == ()


def test_nothing_is_ever_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = tmp_path / "pwned"

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the parser must never evaluate code")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    hostile = [
        f"[f(x=__import__('pathlib').Path({str(sentinel)!r}).touch())]",
        f"[f(x=(lambda: __import__('pathlib').Path({str(sentinel)!r}).touch())())]",
        f"[f(x=1 + __import__('pathlib').Path({str(sentinel)!r}).touch())]",
        f"[f(x=[__import__('pathlib').Path({str(sentinel)!r}).touch()][0])]",
        f"__import__('pathlib').Path({str(sentinel)!r}).touch()",
    ]
    for text in hostile:
        assert not parse_response(text).valid
    assert not sentinel.exists()


def test_huge_input_is_refused_fast() -> None:
    huge = "[" + ", ".join(["f(a=1)"] * 200_000) + "]"
    assert len(huge) > MAX_RESPONSE_CHARS
    start = time.monotonic()
    found = problems(huge)
    assert time.monotonic() - start < 1.0
    assert "limit" in found[0]
    assert "limit" in problems("x" * (MAX_RESPONSE_CHARS + 1))[0]


def test_long_reasoning_does_not_count_against_the_limit() -> None:
    text = "<think>" + "hmm " * 50_000 + "</think>\n" + f"<tool_call>\n{json.dumps(W)}\n</tool_call>"
    assert calls(text) == [W]


# --- OpenAI tool_calls ------------------------------------------------------------------------


def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": "x", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_openai_tool_calls() -> None:
    message = AssistantMessage(content=None, tool_calls=(tool_call("get_weather", '{"city": "Paris"}'),))
    assert calls(message) == [W]
    assert parse_response(message).form == "openai"
    as_dict = AssistantMessage(content="", tool_calls=(tool_call("get_weather", {"city": "Paris"}),))
    assert calls(as_dict) == [W]


def test_openai_content_is_read_too() -> None:
    message = AssistantMessage(
        content=f"<think>x</think>\n<tool_call>\n{json.dumps(W)}\n</tool_call>",
        tool_calls=(tool_call("add", '{"a": 1, "b": 2}'),),
    )
    assert calls(message) == [{"name": "add", "arguments": {"a": 1, "b": 2}}, W]
    only_content = AssistantMessage(content='[get_weather(city="Paris")]')
    assert calls(only_content) == [W]


@pytest.mark.parametrize(
    "bad",
    [
        tool_call("f", "{not json"),
        tool_call("f", "[1, 2]"),
        tool_call("", "{}"),
        {"type": "function"},
        "not a mapping",
        tool_call("f", '{"a": NaN}'),
    ],
)
def test_openai_malformed(bad: Any) -> None:
    message = AssistantMessage(content=None, tool_calls=(bad,))
    assert problems(message)


def test_other_action_types_are_invalid() -> None:
    assert "string or an assistant message" in problems(42)[0]
    assert problems({"content": "hi"})


def test_tag_scanner_equals_looptool_pattern() -> None:
    """``tag_blocks`` returns what LoopTool's ``re.findall`` returns, in linear time."""
    pattern = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)
    rng = random.Random(0)
    pieces = ["<tool_call>", "</tool_call>", "\n", "x", "{}", " ", "<tool_call>\n", "\n</tool_call>"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert tag_blocks(text) == pattern.findall(text), repr(text)


def test_lenient_tag_scanner_reads_any_whitespace() -> None:
    """``lenient``: every ``<tool_call>...</tool_call>`` pair, its body stripped."""
    pattern = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
    rng = random.Random(1)
    pieces = ["<tool_call>", "</tool_call>", "\n", "x", "{}", " ", "<tool_call>\n", "\n</tool_call>"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert tag_blocks(text, lenient=True) == [m.strip() for m in pattern.findall(text)], repr(text)


def test_exact_and_lenient_reading_of_a_one_line_tag() -> None:
    text = f"<tool_call>{json.dumps(W)}</tool_call>"
    exact = parse_response(text)
    assert exact.calls == () and exact.unread_tags == 1
    assert exact.parse_note is not None and "lenient" in exact.parse_note
    lenient = parse_response(text, lenient=True)
    assert lenient.calls_as_dicts() == [W] and lenient.unread_tags == 0 and lenient.parse_note is None


def test_unclosed_tags_are_fast() -> None:
    text = "<tool_call>\n" * (MAX_RESPONSE_CHARS // 12)
    start = time.monotonic()
    assert problems(text)
    assert time.monotonic() - start < 0.5
