"""The clients and ``RemoteEnv`` apply the server's rule for action shapes (one converter,
``toolgym.actions``): a dict that is not an assistant message is an error for the
clients (``ValidationFailed``, as the server's 422) and an ``invalid_action`` step for
``RemoteEnv``, and in both cases the episode on the server stays at its turn. It used to be
sent as an empty reply. Real server on loopback."""

from __future__ import annotations

from typing import Any

import gymnasium
import pytest
from scripted_policies import FUNCTIONCALL, FUNCTIONCALL_TASKS, tool_calls_text

import toolgym  # noqa: F401  (registers the envs)
from toolgym import errors
from toolgym.actions import ACTION_SHAPE
from toolgym.client import AsyncEnvClient, EnvClient, StepResult

BAD: list[Any] = [{"foo": "bar"}, {}, {"role": "assistant"}, {"content": 1}, ["x"], 3, None]
TASK = "fc-math-001"
GOLD = tool_calls_text(FUNCTIONCALL_TASKS[TASK]["gold_calls"])


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_sync_client_refuses_before_sending(process_server: Any, bad: Any) -> None:
    with EnvClient(process_server.base_url) as client:
        episode_id = client.reset(FUNCTIONCALL, TASK, seed=1).episode_id
        with pytest.raises(errors.ValidationFailed, match="not a valid action") as refused:
            client.step(episode_id, bad)
        assert ACTION_SHAPE in refused.value.message
        with pytest.raises(errors.ValidationFailed, match="not a valid action"):
            client.batch_step([{"episode_id": episode_id, "action": bad}])
        assert client.episode(episode_id)["turn"] == 0
        assert client.step(episode_id, GOLD, expected_turn=0).reward == 1.0


async def test_async_client_refuses_before_sending(process_server: Any) -> None:
    async with AsyncEnvClient(process_server.base_url) as client:
        episode_id = (await client.reset(FUNCTIONCALL, TASK, seed=1)).episode_id
        for bad in BAD:
            with pytest.raises(errors.ValidationFailed, match="not a valid action"):
                await client.step(episode_id, bad)
            with pytest.raises(errors.ValidationFailed, match="not a valid action"):
                await client.batch_step([{"episode_id": episode_id, "action": bad}])
        assert (await client.episode(episode_id))["turn"] == 0
        (result,) = await client.batch_step([{"episode_id": episode_id, "action": GOLD}])
        assert isinstance(result, StepResult) and result.reward == 1.0


def test_remote_env_answers_invalid_action_and_keeps_the_episode(process_server: Any) -> None:
    env = gymnasium.make("toolgym/FunctionCall-v0", base_url=process_server.base_url,
                         task_id=TASK).unwrapped
    try:
        env.reset(seed=3)
        for bad in BAD:
            assert bad not in env.action_space
            observation, reward, terminated, truncated, info = env.step(bad)
            assert (observation, reward, terminated, truncated) == ({"messages": []}, 0.0, False, False)
            assert info["status"] == "invalid_action" and "not a valid action" in info["message"], info
            assert observation in env.observation_space
        assert env.client.episode(env.episode_id)["turn"] == 0
        _, reward, terminated, _, info = env.step(GOLD)
        assert (reward, terminated, info["status"]) == (1.0, True, "ok")
    finally:
        env.close()
