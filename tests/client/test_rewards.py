"""Scripted policies over ``RemoteEnv`` earn exactly the rewards the papers define, with every
episode in its own Docker sandbox: FTRL's step rewards on the built-in ToolUse tasks,
LoopTool's 1 on FunctionCall, SimpleTIR's 1 on CodeMath for code that computes the answer."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import gymnasium
import pytest
from scripted_policies import (
    CODEMATH,
    FUNCTIONCALL,
    TOOLUSE,
    TOOLUSE_TASKS,
    ftrl_turn_reward,
    functioncall_action,
    reference_actions,
    reference_rewards,
    tool_calls_text,
)

import toolgym  # noqa: F401  (registers the envs)
from toolgym.client import EnvClient, RemoteEnv

pytestmark = pytest.mark.docker


@pytest.fixture
def server(server_factory: Callable[..., Any]) -> Any:
    return server_factory("docker", warm_pool_size=2)


def play(env: Any, actions: list[str], **reset: Any) -> tuple[list[float], list[dict[str, Any]], dict[str, Any]]:
    """Rewards and observations of playing ``actions`` to the end; the last info."""
    env.reset(**reset)
    rewards, observations = [], []
    info: dict[str, Any] = {}
    for i, action in enumerate(actions):
        observation, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        observations.append(observation)
        assert not truncated
        assert terminated == (i == len(actions) - 1), (i, info)
    return rewards, observations, info


def test_reference_solutions_earn_ftrl_rewards_on_every_builtin_task(server: Any) -> None:
    env = gymnasium.make(TOOLUSE, base_url=server.base_url)
    try:
        for task_id in sorted(TOOLUSE_TASKS):
            rewards, observations, info = play(env, reference_actions(task_id), options={"task_id": task_id})
            assert rewards == reference_rewards(task_id), task_id  # exact: 2k/(k+1) per turn, then 1
            assert info["reason"] == "answered" and info["answer_correct"] is True
            assert info["metrics"] == {"solve_precision": 1.0, "solve_rate": 1.0, "solve_f1": 1.0}
            for observation, turn in zip(observations, TOOLUSE_TASKS[task_id]["reference_solution"], strict=False):
                assert [m["name"] for m in observation["messages"]] == [c["name"] for c in turn]
                assert not any(m["content"].startswith("an error occured") for m in observation["messages"])
    finally:
        env.close()


def test_reward_variants(server: Any) -> None:
    env = RemoteEnv(TOOLUSE, server.base_url, task_id="tu-pmulti-2")
    try:
        for variant in ("solve_f1", "solve_precision", "solve_rate", "solve_pr"):
            rewards, _, info = play(env, reference_actions("tu-pmulti-2"), options={"reward": variant})
            assert rewards == [ftrl_turn_reward(variant, 2, 2), ftrl_turn_reward(variant, 2, 2), 1.0], variant
            assert info["reward_components"] == {"answer_correct": 1.0}
    finally:
        env.close()


def test_wasted_calls_and_early_answers_cost_what_ftrl_says(server: Any) -> None:
    env = RemoteEnv(TOOLUSE, server.base_url)
    try:
        # One call fails (no such city), one solves the gold: k=1 of n=2.
        turn = tool_calls_text([{"name": "get_city_info", "arguments": {"city": "Atlantis"}},
                                {"name": "get_city_info", "arguments": {"city": "Varnholt"}}])
        rewards, observations, info = play(env, [turn, "Varnholt has 48,210 people."],
                                           options={"task_id": "tu-single-1"})
        assert rewards == [2 * 1 / (2 + 1), 1.0]
        failed, solved = observations[0]["messages"]
        assert failed["content"].startswith("an error occured when call get_city_info:")
        assert json.loads(solved["content"])["population"] == 48210
        assert info["metrics"] == {"solve_precision": 0.5, "solve_rate": 1.0, "solve_f1": 2 * 1 / (2 + 1)}

        # The right answer with both golds unsolved: 1/(1+u), u = 2.
        rewards, _, info = play(env, ["Imara Solberg"], options={"task_id": "tu-multi-1"})
        assert rewards == [1 / 3] and info["metrics"]["solve_rate"] == 0.0
        rewards, _, _ = play(env, ["No idea."], options={"task_id": "tu-multi-1"})
        assert rewards == [0.0]
        rewards, _, info = play(env, [""], options={"task_id": "tu-multi-1"})
        assert rewards == [-0.5] and info["reason"] == "no_tool_call"
    finally:
        env.close()


def test_functioncall_gold_calls_earn_one(server: Any) -> None:
    env = gymnasium.make(FUNCTIONCALL, base_url=server.base_url)
    try:
        for task_id in ("fc-math-002", "fc-calendar-001", "fc-text-001"):
            observation, _ = env.reset(options={"task_id": task_id})
            _, reward, terminated, _, info = env.step(functioncall_action(observation))
            assert (reward, terminated, info["status"]) == (1.0, True, "ok"), (task_id, info)
        for verifier in ("looptool", "bfcl"):
            observation, _ = env.reset(options={"task_id": "fc-weather-002", "verifier": verifier})
            assert env.step(functioncall_action(observation))[1] == 1.0
            env.reset(options={"task_id": "fc-weather-002", "verifier": verifier})
            wrong = tool_calls_text([{"name": "get_weather", "arguments": {"city": "Boston"}}])  # no unit
            assert env.step(wrong)[1] == 0.0
    finally:
        env.close()


def lcm_code(question: str) -> str:
    a, b = (int(n) for n in re.findall(r"\d+", question.split(":", 1)[1])[:2])
    return f"```python\nimport math\nprint(math.lcm({a}, {b}))\n```"


def test_codemath_code_then_boxed_answer_earns_one(server: Any) -> None:
    env = RemoteEnv(CODEMATH, server.base_url, task_id="lcm-train-000")
    try:
        observation, info = env.reset()
        question = observation["messages"][-1]["content"]
        assert "Least Common Multiple" in question
        action = f"Let me compute it.\n{lcm_code(question)}"
        observation, reward, terminated, truncated, info = env.step(action)
        assert (reward, terminated, truncated, info["status"]) == (0.0, False, False, "ok")
        printed = re.search(r"Code execution result: (\d+)", observation["messages"][0]["content"])
        assert printed is not None
        answer = int(printed.group(1))
        assert answer == math.lcm(*(int(n) for n in re.findall(r"\d+", question.split(":", 1)[1])[:2]))
        observation, reward, terminated, truncated, info = env.step(f"So the LCM is \\boxed{{{answer}}}.")
        assert (reward, terminated, truncated, info["reason"]) == (1.0, True, False, "answered")
        assert info["reward_components"] == {"correct": 1.0}

        # final_answer() in code ends the episode in one turn, also with 1.
        env.reset()
        code = lcm_code(question).replace("print(math.lcm(", "final_answer(math.lcm(")
        _, reward, terminated, _, info = env.step(code)
        assert (reward, terminated, info["reason"]) == (1.0, True, "answered")

        env.reset()  # a wrong box scores 0
        _, reward, terminated, _, _ = env.step(f"\\boxed{{{answer + 1}}}")
        assert (reward, terminated) == (0.0, True)
    finally:
        env.close()
    with EnvClient(server.base_url) as client:
        assert client.episodes(status="live")["total"] == 0
