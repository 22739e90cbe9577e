"""gymnasium's standard wrappers over ``RemoteEnv`` on a process-backend server: ``TimeLimit``
(through ``gymnasium.make(..., max_episode_steps=...)`` and ``make_vec``) and
``RecordEpisodeStatistics`` (single and vector). A truncation is the client's own: the remote
episode stays live and untouched until the next reset or close, which closes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit
from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics
from scripted_policies import CODEMATH, FUNCTIONCALL, functioncall_action

import toolgym  # noqa: F401  (registers the envs)
from toolgym.client import EnvClient, RemoteEnv

CODE = "Let me compute.\n```python\nprint(6 * 7)\n```"  # CodeMath: code runs, the episode goes on


def episodes(base_url: str) -> dict[str, dict[str, Any]]:
    with EnvClient(base_url) as client:
        return {e["episode_id"]: e for e in client.episodes(limit=100)["episodes"]}


def has_wrapper(env: gymnasium.Env[Any, Any], kind: type) -> bool:
    while isinstance(env, gymnasium.Wrapper):
        if isinstance(env, kind):
            return True
        env = env.env
    return False


def test_max_episode_steps_truncates_and_the_remote_episode_stays_consistent(
    server_factory: Callable[..., Any],
) -> None:
    server = server_factory("process", warm_pool_size=0)
    env = gymnasium.make(CODEMATH, base_url=server.base_url, max_episode_steps=2)
    try:
        assert env.spec is not None and env.spec.max_episode_steps == 2 and has_wrapper(env, TimeLimit)
        env.reset(seed=4)
        first = env.unwrapped.episode_id
        _, _, terminated, truncated, _ = env.step(CODE)
        assert (terminated, truncated) == (False, False)
        observation, _, terminated, truncated, info = env.step(CODE)
        assert (terminated, truncated) == (False, True) and info["status"] == "ok"
        assert "42" in observation["messages"][-1]["content"]
        record = episodes(server.base_url)[first]
        assert (record["status"], record["turn"]) == ("live", 2)  # the server saw exactly two turns
        env.reset()
        assert episodes(server.base_url)[first]["status"] != "live"  # reset closed the truncated one
    finally:
        env.close()
    assert all(e["status"] != "live" for e in episodes(server.base_url).values())


def test_record_episode_statistics_on_a_single_env(server_factory: Callable[..., Any]) -> None:
    server = server_factory("process", warm_pool_size=0)
    env = RecordEpisodeStatistics(gymnasium.make(FUNCTIONCALL, base_url=server.base_url))
    truncating = RecordEpisodeStatistics(TimeLimit(RemoteEnv(CODEMATH, server.base_url), max_episode_steps=3))
    try:
        observation, _ = env.reset(seed=9)
        _, reward, terminated, _, info = env.step(functioncall_action(observation))
        assert terminated and reward == 1.0
        assert (info["episode"]["r"], info["episode"]["l"]) == (1.0, 1) and info["episode"]["t"] >= 0

        truncating.reset(seed=1)
        lengths = []
        for _ in range(3):
            _, _, terminated, truncated, info = truncating.step(CODE)
            lengths.append("episode" in info)
        assert truncated and not terminated and lengths == [False, False, True]
        assert info["episode"]["l"] == 3
    finally:
        env.close()
        truncating.close()
    assert all(e["status"] != "live" for e in episodes(server.base_url).values())


def test_vector_env_with_time_limit_and_statistics(server_factory: Callable[..., Any]) -> None:
    server = server_factory("process", warm_pool_size=0)
    envs = VectorRecordEpisodeStatistics(gymnasium.make_vec(
        CODEMATH, num_envs=2, vectorization_mode="async", base_url=server.base_url, max_episode_steps=2))
    try:
        envs.reset(seed=6)
        first = list(envs.unwrapped.get_attr("episode_id"))
        _, _, terminated, truncated, infos = envs.step([CODE, CODE])
        assert not terminated.any() and not truncated.any() and "episode" not in infos
        _, rewards, terminated, truncated, infos = envs.step([CODE, CODE])
        assert not terminated.any() and truncated.all()  # TimeLimit in every sub-env
        assert list(infos["_episode"]) == [True, True] and list(infos["episode"]["l"]) == [2, 2]
        assert [e["status"] for e in (episodes(server.base_url)[i] for i in first)] == ["live", "live"]

        observations, rewards, terminated, truncated, _ = envs.step([CODE, CODE])  # the autoreset step
        assert np.all(rewards == 0.0) and not terminated.any() and not truncated.any()
        after = list(envs.unwrapped.get_attr("episode_id"))
        records = episodes(server.base_url)
        assert set(after).isdisjoint(first) and all(records[e]["status"] == "live" for e in after)
        assert all(records[e]["status"] != "live" and records[e]["turn"] == 2 for e in first)
        assert all(o["messages"][-1]["role"] == "user" for o in observations)  # fresh questions
    finally:
        envs.close()
    assert all(e["status"] != "live" for e in episodes(server.base_url).values())
