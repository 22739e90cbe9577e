"""CodeMath against the authors' code: ``simpletir_cases.json`` holds random trajectories and
what ltzheng/SimpleTIR's own functions made of them (``gen_simpletir.py`` wrote it, running
their ``_postprocess_responses``, ``execute_predictions`` and ``compute_score``). Each case is
replayed through our env, with a runner that returns the recorded sandbox output, and every
observable must be equal: the cut turn, the program sent to the sandbox, the observation,
when and why the episode ends, the void flag, the code counters, the extracted answer and
the reward."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolgym.envs.base import Task
from toolgym.envs.codemath import CodeMathFamily, VerifierPool
from toolgym.envs.codemath.parsing import parse_turn
from toolgym.envs.runner import RunRequest, RunResult

FIXTURE = Path(__file__).with_name("simpletir_cases.json")
CASES: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def family() -> Iterator[CodeMathFamily]:
    with VerifierPool(workers=1, timeout_s=10.0) as pool:
        yield CodeMathFamily(verifier=pool)


class Recorded:
    """A runner that returns the case's recorded sandbox output and keeps what it was sent."""

    def __init__(self) -> None:
        self.run: dict[str, str] = {}
        self.programs: list[str] = []

    def __call__(self, request: RunRequest) -> RunResult:
        self.programs.append(request.code)
        run = self.run
        return RunResult(status=run["status"], stdout=run["stdout"], stderr=run["stderr"])  # type: ignore[arg-type]


def test_fixture_is_small_and_covers_the_rules() -> None:
    assert FIXTURE.stat().st_size < 200_000
    assert len(CASES) >= 100
    solutions = [c["expected"]["solution"] for c in CASES]
    last_steps = [c["expected"]["steps"][-1] for c in CASES]
    assert any(
        "答案是" in c["expected"]["solution"]
        and "boxed" not in c["expected"]["solution"]
        and c["expected"]["score"] == 1
        for c in CASES
    )
    assert any("he answer is" in s and "boxed" not in s for s in solutions)
    assert sum(step["void"] for step in last_steps) >= 10
    assert sum(not step["done"] for step in last_steps) >= 10  # turn limits
    assert {c["max_turns"] for c in CASES} >= {5, 10}
    assert any(step["observation"].endswith("\n\n") for c in CASES for step in c["expected"]["steps"])
    assert any(t["run"]["status"] == "timeout" for c in CASES for t in c["turns"])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_replay_matches_simpletir(family: CodeMathFamily, case: dict[str, Any]) -> None:
    runner = Recorded()
    # SimpleTIR's limits come from the split's defaults (5 on train, 10 otherwise); others are set.
    split = {5: "train", 10: "test"}.get(case["max_turns"], "validation")
    raw = {} if split != "validation" else {"max_turns": case["max_turns"]}
    task = Task(env_id=family.env_id, id=case["id"], split=split, record={"question": "q", "answer": case["gold"]})
    options = family.parse_options(raw, split)
    assert options.max_turns == case["max_turns"]
    episode = family.start(task, options, runner, random.Random(0))
    episode.reset()
    expected = case["expected"]
    step = None
    for i, (turn, want) in enumerate(zip(case["turns"], expected["steps"], strict=True)):
        assert parse_turn(turn["text"]).text == want["cut"], f"turn {i}: cut"
        runner.run, runner.programs = turn["run"], []
        step = episode.step(turn["text"])
        assert runner.programs == ([want["program"]] if want["program"] is not None else []), f"turn {i}: program"
        assert step.observation.messages == [{"role": "user", "content": want["observation"]}], f"turn {i}: observation"
        assert step.terminated == want["done"], f"turn {i}: done"
        assert step.info["void_turn"] == want["void"], f"turn {i}: void"
        last = i == case["max_turns"] - 1
        assert step.truncated == (last and not want["done"]), f"turn {i}: truncated"
        if step.terminated or step.truncated:
            assert i == len(expected["steps"]) - 1, f"turn {i}: ended early"
    assert step is not None and (step.terminated or step.truncated)
    metrics = step.info["metrics"]
    assert metrics["use_code"] == sum(s["use_code"] for s in expected["steps"])
    assert metrics["valid_code"] == sum(s["valid_code"] for s in expected["steps"])
    assert step.info.get("extracted_answer", "") == expected["extracted"][:200]
    assert step.reward == float(expected["score"])
