"""Properties of the tool-call parsers, checked by hypothesis: the shared tag parser
(``toolgym.envs.actions``), LoopTool's reader (``functioncall.parsing``, exact and lenient, tags
and Python call lists), tool argument values, and FTRL's answer check (``tooluse.verifier``).

Budgets come from the hypothesis profile (tests/conftest.py): small by default, large under
``HYPOTHESIS_PROFILE=slow`` (scripts/slow-tests.sh)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fuzz_strategies import any_text, dotted_names, identifiers, json_objects, json_values
from hypothesis import assume, given
from hypothesis import strategies as st

from toolgym.envs.actions import parse_action, parse_tool_call_tags, strip_end_tokens
from toolgym.envs.base import AssistantMessage
from toolgym.envs.functioncall.parsing import (
    parse_python_calls,
    parse_response,
    remove_reasoning,
    tag_blocks,
)
from toolgym.envs.functioncall.values import ValueProblem, check_value
from toolgym.envs.tooluse.verifier import answer_verify, final_turn_reward, format_result, normalize

pytestmark = pytest.mark.fuzz

names = st.text(min_size=1, max_size=12)
calls = st.lists(st.tuples(names, json_objects), max_size=4)
FTRL_CLOSE = "</tool_call>"
"""FTRL's parser splits the turn on this before reading JSON, so a call whose JSON holds it
cannot be read back (theirs behaves the same); round trips leave it out."""


def _free_of(*needles: str) -> Any:
    return lambda value: not any(n in json.dumps(value, ensure_ascii=False) for n in needles)


def _tags(name: str, arguments: Any, string_arguments: bool = False) -> str:
    args = json.dumps(arguments, ensure_ascii=False) if string_arguments else arguments
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "</tool_call>"


# --- the shared parser (FTRL's parse_qwen) ------------------------------------------------------


@given(any_text, st.integers(0, 50))
def test_tag_parser_never_raises_and_keeps_text_without_calls(text: str, turn: int) -> None:
    parsed = parse_tool_call_tags(text, turn)
    if not parsed.calls:
        assert parsed.content == text.strip()
    assert [c.id for c in parsed.calls] == [f"call_{turn}_{i}" for i in range(len(parsed.calls))]
    for call in parsed.calls:
        assert isinstance(call.name, str) and call.name and isinstance(call.arguments, dict)
    assert parse_action(text, turn) == parse_tool_call_tags(strip_end_tokens(text), turn)


@given(st.text(max_size=60).filter(lambda s: "<tool_call>" not in s), calls, st.booleans(), st.integers(0, 9))
def test_rendered_calls_parse_back(content: str, wanted: list[tuple[str, dict[str, Any]]], as_string: bool,
                                   turn: int) -> None:
    assume(all(_free_of(FTRL_CLOSE)([n, a]) for n, a in wanted))
    text = content + "".join(_tags(n, a, as_string) for n, a in wanted)
    parsed = parse_tool_call_tags(text, turn)
    assert [(c.name, c.arguments) for c in parsed.calls] == wanted
    assert parsed.skipped_calls == 0
    assert parsed.content == (content.strip() if wanted else text.strip())


@given(st.text(max_size=40), calls)
def test_openai_message_round_trip(content: str, wanted: list[tuple[str, dict[str, Any]]]) -> None:
    first = parse_action(AssistantMessage(content=content, tool_calls=tuple(
        {"id": "x", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for n, a in wanted)))
    if not wanted:
        return
    again = parse_action(AssistantMessage(content=first.content, tool_calls=tuple(c.to_openai() for c in first.calls)))
    assert again == first
    assert [(c.name, c.arguments) for c in first.calls] == wanted


@given(st.lists(st.dictionaries(st.text(max_size=5), json_values | json_objects, max_size=3), max_size=4))
def test_openai_message_with_junk_tool_calls_never_raises(raw: list[dict[str, Any]]) -> None:
    parsed = parse_action(AssistantMessage(content="hi", tool_calls=tuple(raw)))
    assert len(parsed.calls) + parsed.skipped_calls == len(raw)


# --- LoopTool's reader --------------------------------------------------------------------------

LOOPTOOL_BLOCK = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)


@given(any_text)
def test_tag_blocks_matches_looptool_regex(text: str) -> None:
    assert tag_blocks(text) == LOOPTOOL_BLOCK.findall(text)


@given(any_text, st.booleans())
def test_parse_response_never_raises(text: str, lenient: bool) -> None:
    parsed = parse_response(text, lenient=lenient)
    assert parsed.form in ("text", "tags", "python")
    assert parsed.valid == (not parsed.problems)
    json.dumps(parsed.calls_as_dicts())  # what reaches info["parsed_calls"] is JSON
    for call in parsed.calls:
        check_value(call.arguments, "arguments")


@given(any_text)
def test_remove_reasoning_is_idempotent(text: str) -> None:
    once = remove_reasoning(text)
    assert remove_reasoning(once) == once
    assert once in text


plain_prose = st.text(max_size=40).filter(
    lambda s: not any(t in s for t in ("<tool_call>", "</tool_call>", "</think>", "<|im_end|>"))
)
loop_calls = st.lists(st.tuples(names, json_objects), min_size=1, max_size=3)


@given(plain_prose, loop_calls, st.sampled_from(["", "\n", "  "]))
def test_exact_tag_blocks_parse_back(prose: str, wanted: list[tuple[str, dict[str, Any]]], sep: str) -> None:
    assume(all(_free_of("<tool_call>", "</tool_call>", "</think>", "<|im_end|>")([n, a]) for n, a in wanted))
    text = prose + sep.join(
        "<tool_call>\n" + json.dumps({"name": n, "arguments": a}) + "\n</tool_call>" for n, a in wanted
    )
    for lenient in (False, True):
        parsed = parse_response(text, lenient=lenient)
        assert parsed.valid, parsed.problems
        assert parsed.form == "tags" and parsed.unread_tags == 0
        assert parsed.calls_as_dicts() == [{"name": n, "arguments": a} for n, a in wanted]


@given(loop_calls, st.lists(st.sampled_from(["", " ", "\n", "\t", "\n\n "]), min_size=2, max_size=2))
def test_lenient_reads_any_whitespace(wanted: list[tuple[str, dict[str, Any]]], spaces: list[str]) -> None:
    assume(all(_free_of("<tool_call>", "</tool_call>", "</think>", "<|im_end|>")([n, a]) for n, a in wanted))
    before, after = spaces
    bodies = [json.dumps({"name": n, "arguments": a}) for n, a in wanted]
    text = "".join(f"<tool_call>{before}{body}{after}</tool_call>" for body in bodies)
    parsed = parse_response(text, lenient=True)
    assert parsed.valid, parsed.problems
    assert parsed.calls_as_dicts() == [{"name": n, "arguments": a} for n, a in wanted]
    exact = parse_response(text)
    if before.startswith("\n") and after.endswith("\n"):
        assert exact.calls_as_dicts() == parsed.calls_as_dicts()
    else:
        assert exact.calls == () and not exact.valid and exact.unread_tags == len(wanted)


python_scalars = (st.none() | st.booleans() | st.integers(-(10**12), 10**12)
                  | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10))
python_values = st.recursive(
    python_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
python_calls = st.lists(
    st.tuples(dotted_names, st.dictionaries(identifiers, python_values, max_size=4)), min_size=1, max_size=3
)


@given(python_calls, st.sampled_from(["{}", "[{}]", "```python\n[{}]\n```", "```\n[{}]\n```"]))
def test_python_call_lists_parse_back(wanted: list[tuple[str, dict[str, Any]]], frame: str) -> None:
    rendered = ", ".join(f"{n}({', '.join(f'{k}={v!r}' for k, v in a.items())})" for n, a in wanted)
    text = frame.format(rendered) if len(wanted) > 1 or frame != "{}" else rendered
    got, problems = parse_python_calls(text)
    assert problems == []
    assert [(c.name, c.arguments) for c in got] == wanted
    # The full reader first ends the turn at <|im_end|> and drops reasoning, as LoopTool does.
    assume(not any(marker in text for marker in ("<|im_end|>", "<|endoftext|>", "</think>", "<tool_call>",
                                                  "</tool_call>")))
    parsed = parse_response(text)
    assert parsed.form == "python" and parsed.valid, parsed.problems
    assert parsed.calls_as_dicts() == [{"name": n, "arguments": a} for n, a in wanted]


@given(any_text)
def test_python_call_parser_never_raises(text: str) -> None:
    got, problems = parse_python_calls(text)
    assert all(isinstance(p, str) and p for p in problems)
    json.dumps([c.arguments for c in got])
    if got and not problems:  # a clean read is a fixed point: rendered back, it reads the same
        again, _ = parse_python_calls("[" + ", ".join(
            f"{c.name}({', '.join(f'{k}={v!r}' for k, v in c.arguments.items())})" for c in got) + "]")
        assert [(c.name, c.arguments) for c in again] == [(c.name, c.arguments) for c in got]


# --- tool argument values --------------------------------------------------------------------------


@given(json_values)
def test_every_json_value_is_accepted_and_survives_json(value: Any) -> None:
    check_value(value, "x")
    assert json.loads(json.dumps(value)) == value


@given(st.sampled_from([float("nan"), float("inf"), -float("inf"), (1,), {1: 2}, b"x"]), json_objects)
def test_non_json_values_are_refused_wherever_they_hide(bad: Any, around: dict[str, Any]) -> None:
    with pytest.raises(ValueProblem):
        check_value({**around, "k": [bad]}, "arguments")


# --- FTRL's answer check --------------------------------------------------------------------------


@given(any_text)
def test_normalize_is_idempotent(text: str) -> None:
    assert normalize(normalize(text)) == normalize(text)


ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(ascii_text, ascii_text, ascii_text)
def test_answer_verify_finds_the_gold_inside_any_output(gold: str, before: str, after: str) -> None:
    assert answer_verify(gold, gold)
    # The gold inside other text still verifies once the pieces are joined by spaces.
    assert answer_verify(before + " " + gold.replace(", ", " ") + " " + after, gold.replace(", ", " "))


@given(json_values, ascii_text)
def test_answer_verify_reads_structured_output_as_json(value: Any, gold: str) -> None:
    shown = format_result(value)
    assert answer_verify(value, gold) == answer_verify(shown, gold)
    if type(value) in (dict, list):
        assert json.loads(shown) == value


@given(st.text(max_size=60), st.none() | st.text(max_size=10), st.integers(0, 5))
def test_final_turn_reward_rules(content: str, answer: str | None, unsolved: int) -> None:
    reward, rule = final_turn_reward(content, answer, unsolved)
    expected = {"empty_response": -0.5, "malformed_tool_call": -0.3, "all_solved": 0.5, "no_credit": 0.0,
                "answer_correct": 1.0 / (1 + unsolved)}
    assert reward == expected[rule]
    if content and answer is not None and "<" not in content and normalize(answer) in normalize(content):
        assert rule == "answer_correct"
