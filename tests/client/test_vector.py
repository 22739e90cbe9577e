"""``gymnasium.make_vec`` over ToolUse on a Docker-backed server: a scripted policy plays the
sub-envs through termination and gymnasium's autoreset, and nothing stays open after close.

``vectorization_mode="async"`` runs each sub-env in a subprocess and, by default, passes
observations back through shared memory; chat observations have their own layout there
(``toolgym.client._gym_vector``), so gymnasium's defaults work. Every wait below has a
timeout, so a stuck worker fails the test. The three env families on the process backend,
both shared-memory settings, and the episode bookkeeping are in ``test_vector_lifecycle.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from scripted_policies import TOOLUSE, ToolUsePolicy, reference_rewards

import toolgym  # noqa: F401  (registers the envs)
from toolgym.client import EnvClient

pytestmark = pytest.mark.docker

N = 3
WAIT_S = 60.0


def live(base_url: str) -> int:
    with EnvClient(base_url) as client:
        return int(client.episodes(status="live")["total"])


class Tally:
    """Per sub-env: the return of each finished episode, with the task it played."""

    def __init__(self, n: int) -> None:
        self.policies = [ToolUsePolicy() for _ in range(n)]
        self.running = [0.0] * n
        self.finished: list[tuple[str, float]] = []
        self.autoresets = 0
        self.pending = [False] * n

    def act(self, observations: tuple[dict[str, Any], ...]) -> list[str]:
        return [policy(obs) for policy, obs in zip(self.policies, observations, strict=True)]

    def record(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        for i in range(len(self.running)):
            if self.pending[i]:  # this step was gymnasium's autoreset: no reward, a new episode
                assert rewards[i] == 0.0 and not terminated[i] and not truncated[i]
                self.pending[i] = False
                self.autoresets += 1
                continue
            self.running[i] += float(rewards[i])
            if terminated[i] or truncated[i]:
                assert terminated[i] and not truncated[i]
                task_id = self.policies[i].task_id
                assert task_id is not None
                self.finished.append((task_id, self.running[i]))
                self.running[i] = 0.0
                self.pending[i] = True


def play(envs: Any, tally: Tally, steps: int) -> None:
    observations, infos = envs.reset(seed=2024)
    assert len(observations) == N and all(o in envs.single_observation_space for o in observations)
    assert all(status == "ok" for status in infos["status"])
    for _ in range(steps):
        observations, rewards, terminated, truncated, _ = envs.step(tally.act(observations))
        assert rewards.dtype == np.float64 and terminated.dtype == np.bool_
        tally.record(rewards, terminated, truncated)


def check(tally: Tally, n: int) -> None:
    assert tally.autoresets >= n  # every sub-env finished an episode and was reset by gymnasium
    for task_id, episode_return in tally.finished:
        assert episode_return == pytest.approx(sum(reference_rewards(task_id)), abs=1e-12), task_id


def test_sync_vector_env(server_factory: Callable[..., Any]) -> None:
    server = server_factory("docker", warm_pool_size=N)
    envs = gymnasium.make_vec(TOOLUSE, num_envs=N, vectorization_mode="sync", base_url=server.base_url,
                              options={"split": "train"})
    assert isinstance(envs, SyncVectorEnv) and envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    tally = Tally(N)
    try:
        play(envs, tally, steps=5)  # train tasks take 2-4 turns: each sub-env finishes and restarts
        # One open episode per sub-env, except those whose episode just ended (reset next step).
        assert live(server.base_url) == tally.pending.count(False)
    finally:
        envs.close()
    check(tally, N)
    assert live(server.base_url) == 0


def test_async_vector_env_with_gymnasiums_defaults(server_factory: Callable[..., Any]) -> None:
    server = server_factory("docker", warm_pool_size=2)
    envs = gymnasium.make_vec(TOOLUSE, num_envs=2, vectorization_mode="async", base_url=server.base_url,
                              options={"split": "train"})
    assert isinstance(envs, AsyncVectorEnv) and envs.unwrapped.shared_memory  # gymnasium's default
    tally = Tally(2)
    try:
        envs.reset_async(seed=7)
        observations, _ = envs.reset_wait(timeout=WAIT_S)
        assert isinstance(observations, tuple) and all(o in envs.single_observation_space for o in observations)
        for _ in range(5):
            envs.step_async(tally.act(observations))
            observations, rewards, terminated, truncated, _ = envs.step_wait(timeout=WAIT_S)
            tally.record(rewards, terminated, truncated)
        assert live(server.base_url) == tally.pending.count(False)
    finally:
        envs.close(terminate=False, timeout=WAIT_S)
    check(tally, 2)
    assert live(server.base_url) == 0
