"""``AsyncEnvClient(protocol="ws")`` against live servers (process backend): full FunctionCall
and ToolUse episodes over the WebSocket session, typed errors, a refused key, and a socket
dropped mid-step (by a loopback TCP proxy the test controls) that the client reopens, resending
the step with the same idempotency key so it acts once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from scripted_policies import (
    FUNCTIONCALL,
    TOOLUSE,
    TOOLUSE_TASKS,
    functioncall_action,
    reference_actions,
    reference_rewards,
)

from toolgym import errors
from toolgym.client import AsyncEnvClient, RetryPolicy
from toolgym.client._core import Call, close_call, episode_call, reset_call, step_call, ws_frame, ws_url

Server = Callable[..., Any]
QUICK = RetryPolicy(max_retries=3, backoff_s=0.05, max_backoff_s=0.2)
SLOW_TOOL = "def slow(seconds):\n    import time\n    time.sleep(float(seconds))\n    return 'slept'\n"


def slow_record() -> dict[str, Any]:
    """A ToolUse task (FTRL's format) with one tool that sleeps, to hold a step in flight."""
    return {
        "id": f"slow-{uuid.uuid4().hex[:8]}",
        "messages": [{"role": "system", "content": "You call tools."}, {"role": "user", "content": "Sleep."}],
        "tools": [{"type": "function", "function": {"name": "slow", "description": "Sleeps.", "parameters": {
            "type": "object", "properties": {"seconds": {"type": "number", "description": "s"}},
            "required": ["seconds"]}}}],
        "codes": {"slow": SLOW_TOOL},
        "answer": "unused",
        "unsolved_set": {"slow": ["never-produced-gold"]},
    }


SLOW_STEP = '<tool_call>{"name": "slow", "arguments": {"seconds": 1.0}}</tool_call>'


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server; ``drop_all`` cuts every connection
    through it at once (as a network failure would), ``connections`` counts those made."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> DroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop_all()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def drop_all(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_frames_are_the_http_calls() -> None:
    step = step_call("ep-1", "hi", 3, "key-1", None)
    assert ws_frame(step) == {"op": "step", "episode_id": "ep-1", "idempotency_key": "key-1",
                              "body": {"action": "hi", "expected_turn": 3}}
    reset = reset_call(FUNCTIONCALL, "t-1", 7, None)
    assert ws_frame(reset) == {"op": "reset", "body": {"env_id": FUNCTIONCALL, "task_id": "t-1", "seed": 7},
                               "idempotency_key": reset.headers["Idempotency-Key"]}
    assert ws_frame(close_call("ep-1")) == {"op": "close", "episode_id": "ep-1"}
    assert ws_frame(episode_call("ep-1")) == {"op": "get", "episode_id": "ep-1"}
    assert ws_frame(Call("GET", "/v1/episodes/ep-1/trajectory")) is None
    assert ws_frame(Call("POST", "/v1/episodes/ep-1/fork")) is None
    assert ws_url("http://10.0.0.2:8000") == "ws://10.0.0.2:8000/v1/ws"
    assert ws_url("https://gym.example/prefix/") == "wss://gym.example/prefix/v1/ws"


async def test_full_episodes_of_functioncall_and_tooluse(process_server: Any) -> None:
    async def functioncall(client: AsyncEnvClient, seed: int) -> float:
        reset = await client.reset(FUNCTIONCALL, seed=seed)
        step = await client.step(reset.episode_id, functioncall_action(reset.observation), expected_turn=0)
        assert step.terminated
        await client.close(reset.episode_id)
        return step.reward

    async def tooluse(client: AsyncEnvClient, task_id: str) -> list[float]:
        reset = await client.reset(TOOLUSE, task_id)
        rewards = []
        for turn, action in enumerate(reference_actions(task_id)):
            step = await client.step(reset.episode_id, action, expected_turn=turn)
            rewards.append(step.reward)
        assert (await client.episode(reset.episode_id))["status"] == "finished"
        await client.close(reset.episode_id)
        return rewards

    tooluse_ids = sorted(TOOLUSE_TASKS)[:4]
    async with AsyncEnvClient(process_server.base_url, protocol="ws") as client:
        fc, tu = await asyncio.gather(
            asyncio.gather(*(functioncall(client, seed) for seed in range(12))),
            asyncio.gather(*(tooluse(client, t) for t in tooluse_ids)),
        )
        assert fc == [1.0] * 12
        assert list(tu) == [reference_rewards(t) for t in tooluse_ids]
        assert (await client.episodes(status="live"))["total"] == 0  # HTTP-only methods still work


async def test_typed_errors_over_the_socket(process_server: Any) -> None:
    async with AsyncEnvClient(process_server.base_url, protocol="ws", retry=QUICK) as client:
        with pytest.raises(errors.EpisodeNotFound):
            await client.step("ep-000000-nothing", "hello")
        with pytest.raises(errors.EnvNotFound) as miss:
            await client.reset("toolgym/FunctionCall")
        assert miss.value.suggestion == FUNCTIONCALL
        reset = await client.reset(FUNCTIONCALL)
        with pytest.raises(errors.TurnMismatch):
            await client.step(reset.episode_id, "x", expected_turn=4)
        await client.step(reset.episode_id, functioncall_action(reset.observation))
        with pytest.raises(errors.EpisodeFinished) as finished:
            await client.step(reset.episode_id, "again")
        assert finished.value.reason == "answered"
        await client.close(reset.episode_id)


async def test_wrong_key_is_unauthorized(server_factory: Server) -> None:
    server = server_factory("process", api_keys=("key-gamma",))
    async with AsyncEnvClient(server.base_url, "key-delta", protocol="ws", retry=QUICK) as wrong, \
            AsyncEnvClient(server.base_url, "key-gamma", protocol="ws") as right:
        with pytest.raises(errors.Unauthorized):
            await wrong.reset(FUNCTIONCALL)
        reset = await right.reset(FUNCTIONCALL)
        await right.close(reset.episode_id)



async def test_capacity_is_retried_then_raised_with_its_retry_after(server_factory: Server) -> None:
    server = server_factory("process", max_live_episodes=1)
    patient = RetryPolicy(max_retries=50, backoff_s=0.05, max_backoff_s=0.1)
    async with AsyncEnvClient(server.base_url, protocol="ws", retry=patient) as client:
        first = await client.reset(FUNCTIONCALL)

        async def free_the_slot() -> None:
            await asyncio.sleep(0.5)
            await client.close(first.episode_id)

        second, _ = await asyncio.gather(client.reset(FUNCTIONCALL), free_the_slot())
        async with AsyncEnvClient(server.base_url, protocol="ws", retry=QUICK) as impatient:
            with pytest.raises(errors.AtCapacity) as full:
                await impatient.reset(FUNCTIONCALL)
        assert full.value.retry_after_s == 2.0  # from the answer's body: a frame has no headers
        await client.close(second.episode_id)

async def test_no_server_is_unavailable() -> None:
    from toolgym.server.embedded import free_port

    async with AsyncEnvClient(f"http://127.0.0.1:{free_port()}", protocol="ws", retry=QUICK) as client:
        with pytest.raises(errors.Unavailable):
            await client.reset(FUNCTIONCALL)


async def test_a_dropped_socket_is_reopened_and_the_step_acts_once(process_server: Any) -> None:
    port = int(process_server.base_url.rsplit(":", 1)[1])
    async with DroppingProxy(port) as proxy, \
            AsyncEnvClient(proxy.base_url, protocol="ws", retry=QUICK) as client:
        [task_id] = await client.register_tasks(TOOLUSE, [slow_record()])
        reset = await client.reset(TOOLUSE, task_id)
        sockets_before = proxy.connections
        step = asyncio.create_task(client.step(reset.episode_id, SLOW_STEP))
        await asyncio.sleep(0.4)  # the step runs in the sandbox now
        proxy.drop_all()
        result = await asyncio.wait_for(step, 30)
        assert result.info["status"] == "ok" and "slept" in json.dumps(result.observation)
        assert proxy.connections > sockets_before  # a new socket carried the retry
        state = await client.episode(reset.episode_id)
        assert state["turn"] == 1 and len(state["steps"]) == 1  # acted once, answered twice
        # The socket works again for the next step.
        again = await client.step(reset.episode_id, SLOW_STEP.replace("1.0", "0.1"))
        assert again.info["status"] == "ok" and (await client.episode(reset.episode_id))["turn"] == 2
        await client.close(reset.episode_id)


@pytest.mark.docker
async def test_twenty_tooluse_episodes_in_docker_over_one_socket(server_factory: Server) -> None:
    server = server_factory("docker", warm_pool_size=4)
    task_ids = [sorted(TOOLUSE_TASKS)[i % len(TOOLUSE_TASKS)] for i in range(20)]

    async def rollout(client: AsyncEnvClient, task_id: str, seed: int) -> list[float]:
        reset = await client.reset(TOOLUSE, task_id, seed=seed)
        rewards = []
        for turn, action in enumerate(reference_actions(task_id)):
            step = await client.step(reset.episode_id, action, expected_turn=turn)
            rewards.append(step.reward)
        await client.close(reset.episode_id)
        return rewards

    async with AsyncEnvClient(server.base_url, protocol="ws") as client:
        results = await asyncio.gather(*(rollout(client, t, i) for i, t in enumerate(task_ids)))
        assert list(results) == [reference_rewards(t) for t in task_ids]
        assert (await client.episodes(status="live"))["total"] == 0
