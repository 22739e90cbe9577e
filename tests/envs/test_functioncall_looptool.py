"""LoopTool's reward rule, case by case (docs/methods.md#looptool; LoopTool ``compare_parsed_content`` and
``toolace.py``'s length check): same number of calls and the same *set* of calls, arguments
with key order ignored and lists compared as sets, values with Python ``==``."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from toolgym.envs.base import Task, options_schema
from toolgym.envs.functioncall import FunctionCallFamily, FunctionCallOptions, looptool_calls_match
from toolgym.envs.functioncall.verify_looptool import hashable
from toolgym.errors import ValidationFailed


def c(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


A = c("get_weather", city="Paris")
B = c("get_weather", city="Berlin")

# (case, gold, predicted, match)
CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], bool]] = [
    ("identical", [A], [A], True),
    ("argument key order", [c("f", a=1, b=2)], [{"name": "f", "arguments": {"b": 2, "a": 1}}], True),
    ("call order", [A, B], [B, A], True),
    ("duplicates: [A,B,B] matches [A,A,B] (set + length, not multiset)", [A, B, B], [A, A, B], True),
    ("duplicates: [A,A] does not match [A,B]", [A, A], [A, B], False),
    ("duplicates: [A,A] matches [A,A]", [A, A], [A, A], True),
    ("length: [A] vs [A,A]", [A], [A, A], False),
    ("empty prediction", [A], [], False),
    ("list value order ignored", [c("f", xs=["a", "b"])], [c("f", xs=["b", "a"])], True),
    ("list value duplicates collapse", [c("f", xs=[1, 2])], [c("f", xs=[2, 1, 2])], True),
    ("list value different members", [c("f", xs=[1, 2])], [c("f", xs=[1, 3])], False),
    (
        "nested dict key order",
        [c("f", o={"x": 1, "y": {"p": 1, "q": 2}})],
        [c("f", o={"y": {"q": 2, "p": 1}, "x": 1})],
        True,
    ),
    (
        "list of dicts, order ignored",
        [c("f", o=[{"k": 1}, {"k": 2}])],
        [c("f", o=[{"k": 2}, {"k": 1}])],
        True,
    ),
    ("missing optional argument", [c("get_weather", city="Paris", unit="celsius")], [A], False),
    ("extra argument", [A], [c("get_weather", city="Paris", unit="celsius")], False),
    ('"1" vs 1', [c("f", n=1)], [c("f", n="1")], False),
    ("1 vs 1.0 (Python ==)", [c("f", n=1)], [c("f", n=1.0)], True),
    ("True vs 1 (Python ==)", [c("f", n=1)], [c("f", n=True)], True),
    ("False vs 0 (Python ==)", [c("f", n=0)], [c("f", n=False)], True),
    ("[] vs {} (both empty frozensets)", [c("f", o={})], [c("f", o=[])], True),
    ("string case counts", [A], [c("get_weather", city="paris")], False),
    ("string whitespace counts", [A], [c("get_weather", city="Paris ")], False),
    ("function name", [A], [c("get_forecast", city="Paris")], False),
    ("None vs missing", [c("f", a=None)], [c("f")], False),
]


@pytest.mark.parametrize(("case", "gold", "predicted", "match"), CASES, ids=[c[0] for c in CASES])
def test_looptool_rule(
    case: str, gold: list[dict[str, Any]], predicted: list[dict[str, Any]], match: bool
) -> None:
    assert looptool_calls_match(predicted, gold) is match


def test_hashable_is_their_conversion() -> None:
    assert hashable({"a": [1, 2]}) == frozenset({("a", frozenset({1, 2}))})
    assert hashable([1, [2]]) == frozenset({1, frozenset({2})})
    assert hashable("x") == "x"


# --- through the env: the response text, the text gold, the info ----------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "roll",
            "description": "Roll a die.",
            "parameters": {"type": "object", "properties": {"sides": {"type": "integer"}}, "required": []},
        },
    },
]
MESSAGES = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Paris?"}]


def run(record: dict[str, Any], action: Any, verifier: str = "looptool") -> tuple[float, dict[str, Any]]:
    family = FunctionCallFamily()
    task = Task(env_id=family.env_id, id="t", split="train", record=family.validate_record(record))
    episode = family.start(task, FunctionCallOptions(verifier=verifier), None, random.Random(0))  # type: ignore[arg-type]
    episode.reset()
    step = episode.step(action)
    assert step.terminated and not step.truncated
    assert step.info["reason"] == "answered"
    assert step.info["reward_components"] == {"match": step.reward}
    return step.reward, step.info


def tags(*calls: dict[str, Any]) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in calls)


CALL_GOLD = {"messages": MESSAGES, "tools": TOOLS, "gold_calls": [A]}
TEXT_GOLD = {"messages": MESSAGES, "tools": TOOLS, "gold_text": True}
DICE_GOLD = {"messages": MESSAGES, "tools": TOOLS, "gold_calls": [c("roll", sides=6), c("roll", sides=6)]}


@pytest.mark.parametrize(
    ("record", "action", "reward", "status"),
    [
        (CALL_GOLD, tags(A), 1.0, "ok"),
        (CALL_GOLD, "<think>Paris, so get_weather.</think>\n" + tags(A), 1.0, "ok"),
        (CALL_GOLD, "Let me check.\n" + tags(A), 1.0, "ok"),  # content before the calls is ignored
        (CALL_GOLD, tags(A, A), 0.0, "ok"),
        (CALL_GOLD, "[]", 0.0, "ok"),  # an empty call list is a valid answer with no calls
        (CALL_GOLD, "It is sunny in Paris.", 0.0, "ok"),
        (TEXT_GOLD, "I can't help with that.", 1.0, "ok"),
        (TEXT_GOLD, "[]", 1.0, "ok"),
        (TEXT_GOLD, tags(A), 0.0, "ok"),
        (TEXT_GOLD, '[get_weather(city="Paris")]', 0.0, "ok"),
        (TEXT_GOLD, "<think>maybe <tool_call> here?</think>\nNo tool fits.", 1.0, "ok"),
        (TEXT_GOLD, "I would write </tool_call> but no.", 0.0, "invalid_action"),
        (DICE_GOLD, tags(c("roll", sides=6), c("roll", sides=6)), 1.0, "ok"),
        (DICE_GOLD, tags(c("roll", sides=6)), 0.0, "ok"),
        (DICE_GOLD, "[roll(sides=6), roll(sides=6)]", 1.0, "ok"),
    ],
)
def test_env_looptool(record: dict[str, Any], action: str, reward: float, status: str) -> None:
    got, info = run(record, action)
    assert (got, info["status"]) == (reward, status)
    assert info["metrics"]["num_gold_calls"] == (
        0.0 if record.get("gold_text") else float(len(record["gold_calls"]))
    )


def test_unread_tag_is_ignored_as_in_looptool() -> None:
    """LoopTool's regex does not read a block without the newlines, so it does not count."""
    action = tags(A) + '\n<tool_call>{"name": "roll", "arguments": {}}</tool_call>'
    reward, info = run(CALL_GOLD, action)
    assert reward == 1.0
    assert info["unparsed_tool_call_tags"] == 1
    assert "parse" in info["parse_note"] and "lenient" in info["parse_note"]
    assert info["parsed_calls"] == [A]


def run_with(record: dict[str, Any], action: Any, **options: Any) -> tuple[float, dict[str, Any]]:
    family = FunctionCallFamily()
    task = Task(env_id=family.env_id, id="t", split="train", record=family.validate_record(record))
    episode = family.start(task, family.parse_options(options, "train"), None, random.Random(0))
    episode.reset()
    step = episode.step(action)
    return step.reward, step.info


ONE_LINE = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def test_tags_without_newlines_score_zero_and_say_why() -> None:
    # Exact mode (default): LoopTool's regex reads no call here, so the reward is 0; info says
    # which tags were not read and what would read them.
    reward, info = run_with(CALL_GOLD, ONE_LINE)
    assert reward == 0.0 and info["parsed_calls"] == []
    assert info["unparsed_tool_call_tags"] == 1
    assert "newline" in info["parse_note"] and "parse='lenient'" in info["parse_note"]
    assert run_with(CALL_GOLD, ONE_LINE)[1] == info  # deterministic


def test_no_parse_note_when_every_tag_was_read() -> None:
    _, info = run_with(CALL_GOLD, tags(A))
    assert "unparsed_tool_call_tags" not in info and "parse_note" not in info


@pytest.mark.parametrize(
    ("action", "reward"),
    [
        (ONE_LINE, 1.0),
        ('<tool_call> {"name": "get_weather", "arguments": {"city": "Paris"}}\n\n</tool_call>', 1.0),
        (tags(A), 1.0),
        (ONE_LINE + "\n" + ONE_LINE, 0.0),  # two calls, one expected
    ],
)
def test_lenient_mode_reads_tags_with_any_whitespace(action: str, reward: float) -> None:
    got, info = run_with(CALL_GOLD, action, parse="lenient")
    assert got == reward
    assert "unparsed_tool_call_tags" not in info


def test_lenient_mode_still_reports_an_unclosed_tag() -> None:
    reward, info = run_with(CALL_GOLD, tags(A) + "\n<tool_call>\n{", parse="lenient")
    assert reward == 1.0
    assert info["unparsed_tool_call_tags"] == 1 and "closing" in info["parse_note"]


def test_parse_option() -> None:
    family = FunctionCallFamily()
    assert family.parse_options({}, "train").parse == "exact"
    with pytest.raises(ValidationFailed) as err:
        family.parse_options({"parse": "loose"}, "train")
    assert err.value.details["option"] == "parse"
    assert "lenient" in options_schema(FunctionCallOptions)["parse"]["doc"]
