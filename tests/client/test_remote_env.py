"""``RemoteEnv``'s own behaviour against a live server (FunctionCall, no sandbox needed)."""

from __future__ import annotations

from typing import Any

import gymnasium
import pytest
from scripted_policies import FUNCTIONCALL, functioncall_action

import toolgym  # noqa: F401  (registers the envs)
from toolgym import errors
from toolgym.client import EnvClient, RemoteEnv


def live(base_url: str) -> list[str]:
    with EnvClient(base_url) as client:
        return [e["episode_id"] for e in client.episodes(status="live")["episodes"]]


def test_reset_step_close(process_server: Any) -> None:
    env = gymnasium.make(FUNCTIONCALL, base_url=process_server.base_url)
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.unwrapped.step("too early")
    observation, info = env.reset(seed=11)
    assert observation in env.observation_space and info["status"] == "ok"
    first = env.unwrapped.episode_id
    observation, reward, terminated, truncated, info = env.step(functioncall_action(observation))
    assert (reward, terminated, truncated, info["reason"]) == (1.0, True, False, "answered")
    env.reset()
    assert live(process_server.base_url) == [env.unwrapped.episode_id] != [first]  # reset closed the old one
    env.close()
    env.close()  # idempotent
    assert live(process_server.base_url) == []


def test_seeds_replay_and_options_pick_tasks(process_server: Any) -> None:
    env = RemoteEnv(FUNCTIONCALL, process_server.base_url)
    try:
        a, _ = env.reset(seed=5)
        b, _ = env.reset(seed=5)
        assert a == b
        questions = {env.reset(seed=seed)[0]["messages"][-1]["content"] for seed in range(8)}
        assert len(questions) > 1  # seeds draw different tasks

        fixed, _ = env.reset(options={"task_id": "fc-text-004"})
        assert "Moby-Dick" in fixed["messages"][-1]["content"]
        _, info = env.reset(options={"split": "test", "verifier": "bfcl"})
        assert info["verifier"] == "bfcl"
        with pytest.raises(errors.ValidationFailed):
            env.reset(options={"verifier": "nope"})
    finally:
        env.close()


def test_constructor_defaults_and_remote_v0(process_server: Any) -> None:
    env = gymnasium.make("toolgym/Remote-v0", env_id=FUNCTIONCALL, base_url=process_server.base_url,
                         task_id="fc-math-001", options={"verifier": "bfcl"})
    try:
        observation, info = env.reset()
        assert "17 plus 25" in observation["messages"][-1]["content"] and info["verifier"] == "bfcl"
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'}}]}
        assert message in env.action_space
        _, reward, terminated, _, info = env.step(message)  # an OpenAI-style message as the action
        assert reward == 1.0 and terminated and info["action_form"] != "text"
    finally:
        env.close()


def test_a_shared_client_outlives_its_envs(process_server: Any) -> None:
    with EnvClient(process_server.base_url) as client:
        envs = [RemoteEnv(FUNCTIONCALL, client=client) for _ in range(3)]
        for i, env in enumerate(envs):
            env.reset(seed=i)
        assert len(client.episodes(status="live")["episodes"]) == 3
        for env in envs:
            env.close()
        assert client.episodes(status="live")["total"] == 0  # the client still works


def test_an_episode_the_server_forgot_does_not_block_reset_or_close(process_server: Any) -> None:
    env = RemoteEnv(FUNCTIONCALL, process_server.base_url)
    try:
        env.episode_id = "ep-000000-forgotten"  # e.g. a server restarted with an in-memory store
        observation, _ = env.reset(seed=2)
        assert observation in env.observation_space
    finally:
        env.close()
    gone = RemoteEnv(FUNCTIONCALL, process_server.base_url)
    gone.episode_id = "ep-000000-forgotten"
    gone.close()
    assert live(process_server.base_url) == []


def test_a_closed_env_refuses_to_reset(process_server: Any) -> None:
    env = RemoteEnv(FUNCTIONCALL, process_server.base_url)
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()
