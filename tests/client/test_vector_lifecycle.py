"""Vector envs of all three families on a process-backend server (no sandbox image needed):
sync and async (shared memory on, gymnasium's default, and off), gymnasium's autoreset, and the
server's own record of every remote episode (``GET /v1/episodes``).

NEXT_STEP autoreset (gymnasium 1.x's default): the step after a sub-env's episode ended resets
that sub-env, which closes the ended remote episode and opens a new one. The tests follow each
sub-env's ``episode_id`` and ask the server, after every step, which episodes are live.
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from scripted_policies import CODEMATH, FUNCTIONCALL, TOOLUSE, ToolUsePolicy, functioncall_action

import toolgym  # noqa: F401  (registers the envs)
from toolgym import errors
from toolgym.client import EnvClient
from toolgym.client._gym_vector import TERMINATE_GRACE_S
from toolgym.server.embedded import EmbeddedServer, free_port

N = 2
WAIT_S = 60.0
ANSWER = "\\boxed{0}"  # CodeMath: a final answer, the episode ends
CODE = "Let me compute.\n```python\nprint(6 * 7)\n```"  # CodeMath: code runs, the episode goes on


def server_episodes(base_url: str) -> dict[str, str]:
    """Every episode the server knows for this key, with its status."""
    with EnvClient(base_url) as client:
        page = client.episodes(limit=100)
    assert page["total"] <= 100
    return {e["episode_id"]: e["status"] for e in page["episodes"]}


class Policy:
    """A per-family scripted policy over the batch; ``options`` are the reset options it needs."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id
        self.tooluse = [ToolUsePolicy() for _ in range(N)]
        self.options = {"split": "train"} if env_id == TOOLUSE else {}

    def __call__(self, observations: Any) -> list[str]:
        if self.env_id == FUNCTIONCALL:
            return [functioncall_action(o) if "tools" in o else "filler" for o in observations]
        if self.env_id == TOOLUSE:
            return [policy(o) for policy, o in zip(self.tooluse, observations, strict=True)]
        return [ANSWER] * N


def make(env_id: str, mode: str, base_url: str, **kwargs: Any) -> VectorEnv:
    envs = gymnasium.make_vec(env_id, num_envs=N, vectorization_mode=mode, base_url=base_url, **kwargs)
    assert isinstance(envs, SyncVectorEnv if mode == "sync" else AsyncVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    return envs


VARIANTS = [
    pytest.param("sync", {}, id="sync"),
    pytest.param("async", {}, id="async-shared-memory"),
    pytest.param("async", {"vector_kwargs": {"shared_memory": False}}, id="async-pipes"),
]


@pytest.mark.parametrize("env_id", [FUNCTIONCALL, TOOLUSE, CODEMATH])
@pytest.mark.parametrize(("mode", "extra"), VARIANTS)
def test_autoreset_opens_and_closes_remote_episodes(
    server_factory: Callable[..., Any], env_id: str, mode: str, extra: dict[str, Any]
) -> None:
    server = server_factory("process", warm_pool_size=0)
    policy = Policy(env_id)
    envs = make(env_id, mode, server.base_url, options=policy.options, **extra)
    assert server_episodes(server.base_url) == {}  # building the vector env opens no episode
    seen: list[str] = []
    try:
        observations, infos = envs.reset(seed=5)
        assert isinstance(observations, tuple) and all(o in envs.single_observation_space for o in observations)
        assert list(infos["status"]) == ["ok"] * N
        current = list(envs.get_attr("episode_id"))
        seen += current
        ended = [False] * N
        autoresets = 0
        for _ in range(7):
            observations, rewards, terminated, truncated, _ = envs.step(policy(observations))
            after = list(envs.get_attr("episode_id"))
            statuses = server_episodes(server.base_url)
            for i in range(N):
                if ended[i]:  # gymnasium's autoreset: a new remote episode, the old one closed
                    assert after[i] != current[i] and statuses[current[i]] != "live"
                    assert (rewards[i], terminated[i], truncated[i]) == (0.0, False, False)
                    assert "tools" in observations[i] or env_id == CODEMATH  # a reset observation
                    seen.append(after[i])
                    autoresets += 1
                else:
                    assert after[i] == current[i]
                    if env_id == FUNCTIONCALL:  # one turn, the gold calls: solved
                        assert (rewards[i], terminated[i]) == (1.0, True)
                assert statuses[after[i]] == ("live" if not (terminated[i] or truncated[i]) else "finished")
            ended = list(np.logical_or(terminated, truncated))
            current = after
        assert autoresets >= N  # every sub-env went round at least once
    finally:
        envs.close()
    statuses = server_episodes(server.base_url)
    assert sorted(statuses) == sorted(seen)  # exactly one remote episode per (auto)reset
    assert "live" not in statuses.values()  # close closed every one of them


def test_same_step_autoreset_through_vector_kwargs(server_factory: Callable[..., Any]) -> None:
    server = server_factory("process", warm_pool_size=0)
    envs = gymnasium.make_vec(FUNCTIONCALL, num_envs=N, vectorization_mode="async", base_url=server.base_url,
                              vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    try:
        assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and envs.unwrapped.shared_memory
        observations, _ = envs.reset(seed=1)
        before = list(envs.get_attr("episode_id"))
        observations_2, rewards, terminated, _, infos = envs.step([functioncall_action(o) for o in observations])
        assert list(rewards) == [1.0] * N and all(terminated)
        assert all(o["messages"] == [] for o in infos["final_obs"])  # the ended episode's last observation
        assert all("tools" in o for o in observations_2)  # ... and already the next one's first
        after = list(envs.get_attr("episode_id"))
        statuses = server_episodes(server.base_url)
        assert all(statuses[e] == "finished" for e in before) and all(statuses[e] == "live" for e in after)
    finally:
        envs.close()
    assert "live" not in server_episodes(server.base_url).values()


def test_an_observation_too_large_for_shared_memory_fails_clearly(server_factory: Callable[..., Any]) -> None:
    server = server_factory("process", warm_pool_size=0)
    envs = gymnasium.make_vec(FUNCTIONCALL, num_envs=N, vectorization_mode="async", base_url=server.base_url,
                              shared_memory_bytes=64)
    try:
        with pytest.raises(errors.PayloadTooLarge, match=r'shared_memory_bytes.*"shared_memory": False'):
            envs.reset(seed=0)
    finally:
        envs.close()
    statuses = server_episodes(server.base_url)
    assert len(statuses) == N and "live" not in statuses.values()  # the failed workers closed theirs


def test_async_waits_time_out_instead_of_hanging(server_factory: Callable[..., Any]) -> None:
    server = server_factory("process", warm_pool_size=0)
    envs = gymnasium.make_vec(CODEMATH, num_envs=N, vectorization_mode="async", base_url=server.base_url)
    try:
        envs.reset_async(seed=3)
        observations, _ = envs.reset_wait(timeout=WAIT_S)
        envs.step_async([CODE] * N)
        observations, _, terminated, truncated, infos = envs.step_wait(timeout=WAIT_S)
        assert not any(terminated) and not any(truncated) and list(infos["status"]) == ["ok"] * N
        assert all("42" in o["messages"][-1]["content"] for o in observations)  # the code's output
    finally:
        envs.close(timeout=WAIT_S)
    assert "live" not in server_episodes(server.base_url).values()


def test_terminated_workers_still_close_their_episodes(server_factory: Callable[..., Any]) -> None:
    """``close(terminate=True)`` (also what a timed-out close and garbage collection do) sends the
    workers SIGTERM; each still closes its remote episode, before ``close`` returns."""
    server = server_factory("process", warm_pool_size=0)
    idle = gymnasium.make_vec(FUNCTIONCALL, num_envs=N, vectorization_mode="async", base_url=server.base_url)
    idle.reset(seed=1)
    busy = gymnasium.make_vec(CODEMATH, num_envs=N, vectorization_mode="async", base_url=server.base_url)
    busy.reset(seed=2)
    assert list(server_episodes(server.base_url).values()) == ["live"] * 2 * N
    idle.close(terminate=True)
    busy.step_async([CODE] * N)
    busy.close(terminate=True)  # mid-step: the waits are cut short, the workers terminated
    statuses = server_episodes(server.base_url)
    assert len(statuses) == 2 * N and "live" not in statuses.values()

    forgotten = gymnasium.make_vec(FUNCTIONCALL, num_envs=N, vectorization_mode="async", base_url=server.base_url)
    forgotten.reset(seed=3)
    del forgotten  # AsyncVectorEnv.__del__ closes with terminate=True
    gc.collect()
    statuses = server_episodes(server.base_url)
    assert len(statuses) == 3 * N and "live" not in statuses.values()


def test_terminate_does_not_wait_on_a_server_that_is_gone(tmp_path: Path) -> None:
    """With the server gone, a terminated worker's close would sit in the client's retries: it
    gets ``TERMINATE_GRACE_S``, then it is killed, and ``close(terminate=True)`` returns."""
    from toolgym.server import Settings, create_app
    from toolgym.server.sandbox.process import ProcessBackend

    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, instance_id=f"grace-{port}", db_path=str(tmp_path / "g.db"),
                        warm_pool_size=0)
    backend = ProcessBackend()
    server = EmbeddedServer(create_app(settings, backend=backend), port=port).start(timeout_s=60)
    envs = gymnasium.make_vec(FUNCTIONCALL, num_envs=N, vectorization_mode="async",
                              base_url=f"http://127.0.0.1:{port}")
    try:
        envs.reset(seed=0)
    finally:
        server.stop()
        backend.close()
    started = time.monotonic()
    envs.close(terminate=True)
    assert time.monotonic() - started < TERMINATE_GRACE_S + 3
    assert [p.exitcode for p in envs.unwrapped.processes] == [-signal.SIGALRM] * N
