"""``AsyncEnvClient`` over HTTP at high concurrency: the lanes under it, against a real server.

At most ``max_connections`` requests are out at once, each on a one-connection lane; the rest
wait in turn. Here: 1,000 concurrent episodes on one client, every one served once; a waiter
cancelled or timed out (even while being handed a lane) holds no lane; the limit is the
constructor's ``max_connections``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from scripted_policies import FUNCTIONCALL, FUNCTIONCALL_TASKS, tool_calls_text

from toolgym.client import AsyncEnvClient
from toolgym.client._async import DEFAULT_MAX_CONNECTIONS
from toolgym.client._lanes import LaneTransport

Server = Callable[..., Any]
TASK = "fc-weather-001"
GOLD = tool_calls_text(FUNCTIONCALL_TASKS[TASK]["gold_calls"])


def metric(text: str, name: str) -> float:
    """The sum of one metric's samples in Prometheus text (every label set)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


async def test_a_thousand_concurrent_episodes_are_each_served_once(server_factory: Server) -> None:
    server = server_factory("process", max_live_episodes=1100, warm_pool_size=0)
    sent: Counter[tuple[str, str, str]] = Counter()
    answers: Counter[int] = Counter()
    limit = 32

    async def on_request(request: httpx.Request) -> None:
        sent[(request.method, request.url.path, request.headers.get("Idempotency-Key", ""))] += 1

    async def on_response(response: httpx.Response) -> None:
        answers[response.status_code] += 1

    async with AsyncEnvClient(server.base_url, max_connections=limit) as client:
        client._http.event_hooks = {"request": [on_request], "response": [on_response]}
        lanes = client._lanes
        peak = 0

        async def episode() -> str:
            nonlocal peak
            reset = await client.reset(FUNCTIONCALL, TASK, seed=0)
            peak = max(peak, lanes.in_flight)
            step = await client.step(reset.episode_id, GOLD)
            assert (step.reward, step.terminated) == (1.0, True)
            await client.close(reset.episode_id)
            return reset.episode_id

        started = time.monotonic()
        async with asyncio.timeout(180):
            ids = await asyncio.gather(*(episode() for _ in range(1000)))
        took = time.monotonic() - started
        assert len(set(ids)) == 1000
        assert lanes.in_flight == 0 and lanes.waiting == 0
        assert len(lanes._lanes) <= limit and peak == limit  # the limit held, and was reached
    async with httpx.AsyncClient(base_url=server.base_url) as plain:
        metrics = (await plain.get("/metrics")).text

    # Every request was handed to the transport once (no retry was needed), and answered 2xx.
    assert sum(answers.values()) == 3000 and all(200 <= code < 300 for code in answers), answers
    assert len(sent) == 3000 and set(sent.values()) == {1}
    assert Counter(method for method, _, _ in sent) == {"POST": 2000, "DELETE": 1000}
    # The server served each exactly once: 1,000 episodes started, stepped and closed.
    assert metric(metrics, "toolgym_episodes_started_total") == 1000
    assert metric(metrics, "toolgym_steps_total") == 1000
    print(f"1000 episodes (3000 requests, {limit} lanes) in {took:.1f} s")


async def held(client: httpx.AsyncClient) -> httpx.Response:
    """A request whose answer is left open, so its lane stays taken until the test closes it."""
    return await client.send(client.build_request("GET", "/healthz"), stream=True)


async def test_cancelled_and_timed_out_waiters_hold_no_lane(process_server: Any) -> None:
    lanes = LaneTransport(2, httpx.AsyncHTTPTransport)
    async with httpx.AsyncClient(base_url=process_server.base_url, transport=lanes, timeout=30.0) as client:
        first, second = await held(client), await held(client)
        assert lanes.in_flight == 2
        waiters = [asyncio.create_task(client.get("/healthz")) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert lanes.waiting == 4 and not any(w.done() for w in waiters)

        waiters[0].cancel()  # cancelled while queued
        await asyncio.sleep(0)
        assert lanes.waiting == 3

        await first.aclose()  # hands the lane to waiters[1]...
        waiters[1].cancel()  # ...which is cancelled before it could run: the lane goes to waiters[2]
        await asyncio.wait_for(waiters[2], 10)
        assert waiters[2].result().status_code == 200
        with pytest.raises(asyncio.CancelledError):
            await waiters[0]
        with pytest.raises(asyncio.CancelledError):
            await waiters[1]
        await second.aclose()
        assert (await asyncio.wait_for(waiters[3], 10)).status_code == 200
        assert lanes.in_flight == 0 and lanes.waiting == 0 and len(lanes._lanes) == 2

        # Both lanes are free again: two answers can be held at once, and a third request
        # waits its pool timeout, then fails unsent without keeping a lane.
        first, second = await held(client), await held(client)
        with pytest.raises(httpx.PoolTimeout):
            await client.get("/healthz", timeout=httpx.Timeout(30.0, pool=0.2))
        assert lanes.in_flight == 2 and lanes.waiting == 0
        await first.aclose()
        await second.aclose()
        assert lanes.in_flight == 0
        assert (await client.get("/healthz")).status_code == 200


async def test_the_limit_is_the_constructor_max_connections(process_server: Any) -> None:
    with pytest.raises(ValueError):
        AsyncEnvClient(process_server.base_url, max_connections=0)
    async with AsyncEnvClient(process_server.base_url) as default, \
            AsyncEnvClient(process_server.base_url, max_connections=3) as three:
        assert default._lanes.limit == DEFAULT_MAX_CONNECTIONS and three._lanes.limit == 3
        results = await asyncio.gather(*(three.health() for _ in range(20)))
        assert results == [{"status": "ok"}] * 20 and len(three._lanes._lanes) == 3


async def test_cancelling_queued_calls_of_the_client_leaks_no_lane(process_server: Any) -> None:
    async with AsyncEnvClient(process_server.base_url, max_connections=2) as client:
        calls = [asyncio.create_task(client.health()) for _ in range(60)]
        await asyncio.sleep(0)  # every call has started: two are out, the rest queued
        assert client._lanes.waiting >= 50
        for call in calls[1::2]:
            call.cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(r == {"status": "ok"} for r in results[0::2])
        assert all(isinstance(r, asyncio.CancelledError) for r in results[1::2])
        lanes = client._lanes
        assert lanes.in_flight == 0 and lanes.waiting == 0 and len(lanes._free) == len(lanes._lanes) == 2
        assert await asyncio.gather(client.health(), client.health(), client.health()) == [{"status": "ok"}] * 3
