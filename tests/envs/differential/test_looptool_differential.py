"""FunctionCall against the authors' code: ``looptool_cases.json`` holds random actions and
what Rednote-ExperienceAI-Lab/LoopTool's own functions made of them (``gen_looptool.py``
wrote it: their GRPO reward ``toolace.compute_score`` with their training settings, the calls
its regex read, and ``compare_parsed_content`` of ``dataloop/filter_grpo_sample.py``). Each
action is replayed through our env in its default (exact) mode with the ``looptool``
verifier: the reward must be theirs, the calls we read must be the calls they read, and our
match rule on their calls must agree with theirs (a length check, then sets, not multisets)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from toolgym.envs.base import Task
from toolgym.envs.functioncall import FunctionCallFamily, looptool_calls_match

FIXTURE = Path(__file__).with_name("looptool_cases.json")
DATA: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = DATA["cases"]


def is_call(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"name", "arguments"} and isinstance(value["arguments"], dict)


def test_fixture_is_small_and_covers_the_rules() -> None:
    assert FIXTURE.stat().st_size < 200_000
    assert len(CASES) >= 160
    scores = [c["expected"]["score"] for c in CASES]
    assert 20 <= scores.count(1) <= len(CASES) - 20
    actions = [c["action"] for c in CASES]
    assert sum("<tool_call>{" in a for a in actions) >= 10  # tags without the newlines
    assert sum("</think>" in a for a in actions) >= 10
    assert sum("gold_text" in c for c in CASES) >= 10
    # a case where the frozenset rule and a multiset rule disagree: [A, B, B] vs [A, A, B]
    assert any(
        c["expected"]["dataloop_match"]
        and sorted(map(json.dumps, c["expected"]["calls_read"])) != sorted(map(json.dumps, c["gold_calls"]))
        for c in CASES
    )


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_replay_matches_looptool(case: dict[str, Any]) -> None:
    family = FunctionCallFamily()
    record: dict[str, Any] = {"messages": DATA["messages"], "tools": DATA["tools"]}
    record.update({k: case[k] for k in ("gold_calls", "gold_text") if k in case})
    task = Task(env_id=family.env_id, id=case["id"], split="test", record=family.validate_record(record))
    episode = family.start(task, family.parse_options({}, "test"), None, random.Random(0))
    episode.reset()
    step = episode.step(case["action"])
    expected = case["expected"]
    assert step.reward == float(expected["score"])
    read = expected["calls_read"]
    if all(is_call(c) for c in read) and step.info["status"] == "ok" and read:
        assert step.info["parsed_calls"] == read
    if expected["dataloop_match"] is not None and all(is_call(c) for c in read):
        assert looptool_calls_match(read, case["gold_calls"]) == expected["dataloop_match"]
