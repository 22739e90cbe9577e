"""``AsyncEnvClient`` against live servers: every method, the error classes, 503 retries, an
idempotent retried step, and 20 ToolUse episodes in Docker sandboxes played concurrently."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from scripted_policies import (
    FUNCTIONCALL,
    FUNCTIONCALL_SPLITS,
    FUNCTIONCALL_TASKS,
    TOOLUSE,
    TOOLUSE_TASKS,
    reference_actions,
    reference_rewards,
    tool_calls_text,
)

import toolgym
from toolgym import errors
from toolgym.client import AsyncEnvClient, ResetResult, RetryPolicy, StepResult

Server = Callable[..., Any]
GOLD = tool_calls_text(FUNCTIONCALL_TASKS["fc-math-001"]["gold_calls"])


async def test_every_method(process_server: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    async with AsyncEnvClient(process_server.base_url) as client:
        assert await client.health() == {"status": "ok"}
        assert (await client.version())["version"] == toolgym.__version__
        assert {e["id"] for e in await client.envs()} == {TOOLUSE, FUNCTIONCALL, "toolgym/CodeMath-v0"}
        page = await client.tasks(FUNCTIONCALL, split="test", offset=1, limit=2)
        tests = [i for i, s in FUNCTIONCALL_SPLITS.items() if s == "test"]
        assert page["total"] == len(tests) and page["offset"] == 1 and [t["id"] for t in page["tasks"]] == tests[1:3]

        record = {**{k: FUNCTIONCALL_TASKS["fc-math-001"][k] for k in ("messages", "tools", "gold_calls")},
                  "id": f"async-{tag}", "split": "test"}
        assert await client.register_tasks(FUNCTIONCALL, [record]) == [f"async-{tag}"]
        with pytest.raises(errors.DuplicateTask):
            await client.register_tasks(FUNCTIONCALL, [record])
        with pytest.raises(errors.ValidationFailed):
            await client.register_tasks(FUNCTIONCALL, [{"id": f"async-{tag}-bad", "messages": []}])

        reset = await client.reset(FUNCTIONCALL, f"async-{tag}", seed=1)
        assert isinstance(reset, ResetResult) and reset.observation["tools"] == record["tools"]
        step = await client.step(reset.episode_id, GOLD, expected_turn=0)
        assert isinstance(step, StepResult) and (step.reward, step.terminated) == (1.0, True)
        assert (await client.episode(reset.episode_id))["total_reward"] == 1.0
        lines = await client.trajectory(reset.episode_id)
        assert [line["turn"] for line in lines] == [None, 0]
        fork = await client.fork(reset.episode_id, turn=0)
        assert fork.observation == reset.observation
        assert (await client.episodes(status="live"))["episodes"][0]["episode_id"] == fork.episode_id
        with pytest.raises(errors.EpisodeFinished) as finished:
            await client.step(reset.episode_id, GOLD)
        assert finished.value.reason == "answered"
        await client.close(fork.episode_id)
        await client.close(reset.episode_id)
        assert (await client.episodes(status="live"))["total"] == 0
        stats = {s["task_id"]: s for s in await client.task_stats(FUNCTIONCALL)}
        assert stats[f"async-{tag}"]["mean_return"] == 1.0

        with pytest.raises(errors.EnvNotFound) as miss:
            await client.reset("toolgym/FunctionCall")
        assert miss.value.suggestion == FUNCTIONCALL
        with pytest.raises(errors.EpisodeNotFound):
            await client.episode("ep-000000-nothing")


async def test_unauthorized(server_factory: Server) -> None:
    server = server_factory("process", api_keys=("key-gamma",))
    async with AsyncEnvClient(server.base_url, "key-delta") as wrong, \
            AsyncEnvClient(server.base_url, "key-gamma") as right:
        with pytest.raises(errors.Unauthorized):
            await wrong.tasks(FUNCTIONCALL)
        assert (await right.tasks(FUNCTIONCALL))["total"] == len(FUNCTIONCALL_TASKS)


async def test_capacity_retry_then_exhaustion(server_factory: Server) -> None:
    server = server_factory("process", max_live_episodes=1)
    patient = RetryPolicy(max_retries=50, backoff_s=0.05, max_backoff_s=0.1)
    async with AsyncEnvClient(server.base_url, retry=patient) as client:
        first = await client.reset(FUNCTIONCALL)

        async def free_the_slot() -> None:
            await asyncio.sleep(0.5)
            await client.close(first.episode_id)

        started = time.monotonic()
        second, _ = await asyncio.gather(client.reset(FUNCTIONCALL), free_the_slot())
        assert time.monotonic() - started >= 0.5
        brief = RetryPolicy(max_retries=1, backoff_s=0.01, max_backoff_s=0.02)
        async with AsyncEnvClient(server.base_url, retry=brief) as impatient:
            with pytest.raises(errors.AtCapacity) as full:
                await impatient.reset(FUNCTIONCALL)
        assert full.value.retry_after_s == 2.0
        await client.close(second.episode_id)


class LoseFirstStepAnswer(httpx.AsyncBaseTransport):
    """Delivers the first step, then reports a read timeout instead of its answer."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.step_keys: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/step"):
            self.step_keys.append(request.headers["Idempotency-Key"])
            if len(self.step_keys) == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadTimeout("the answer was lost on the way back", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_lost_step_answer_is_retried_without_acting_twice(process_server: Any) -> None:
    lossy = LoseFirstStepAnswer()
    async with AsyncEnvClient(process_server.base_url, transport=lossy) as client:
        episode = await client.reset(TOOLUSE, "tu-single-2")
        step = await client.step(episode.episode_id, reference_actions("tu-single-2")[0])
        assert step.reward == 1.0 and len(lossy.step_keys) == 2 and len(set(lossy.step_keys)) == 1
        assert (await client.episode(episode.episode_id))["turn"] == 1
        await client.close(episode.episode_id)


@pytest.mark.docker
async def test_twenty_episodes_concurrently(server_factory: Server) -> None:
    server = server_factory("docker", warm_pool_size=4)
    task_ids = [sorted(TOOLUSE_TASKS)[i % len(TOOLUSE_TASKS)] for i in range(20)]

    async def rollout(client: AsyncEnvClient, episode: ResetResult, task_id: str) -> list[float]:
        rewards = []
        for turn, action in enumerate(reference_actions(task_id)):
            step = await client.step(episode.episode_id, action, expected_turn=turn)
            rewards.append(step.reward)
            assert step.terminated == (turn == len(reference_actions(task_id)) - 1)
        await client.close(episode.episode_id)
        return rewards

    async with AsyncEnvClient(server.base_url) as client:
        episodes = await asyncio.gather(*(client.reset(TOOLUSE, t, seed=i) for i, t in enumerate(task_ids)))
        assert len({e.episode_id for e in episodes}) == 20
        assert (await client.episodes(status="live"))["total"] == 20  # all twenty open at once
        results = await asyncio.gather(*(rollout(client, e, t) for e, t in zip(episodes, task_ids, strict=True)))
        for task_id, rewards in zip(task_ids, results, strict=True):
            assert rewards == reference_rewards(task_id), task_id
        assert (await client.episodes(status="live"))["total"] == 0
        finished = (await client.episodes(status="finished", limit=100))["episodes"]
        assert sorted(e["total_reward"] for e in finished) == sorted(sum(r) for r in results)
