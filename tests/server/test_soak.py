"""The soak: thousands of steps from 64 concurrent clients against one real server, then three checks.

A ``toolgym serve`` child process on 127.0.0.1 with the Docker backend (real containers) takes
``TOOLGYM_SOAK_STEPS`` steps (default 10,000; 500 for a quick local run) from 64 concurrent
``AsyncEnvClient`` episode loops. The loops mix the three families so containers churn all the
time: ToolUse episodes (a tool call per step, in the episode's container), CodeMath episodes
(Python run in the container) and FunctionCall episodes (one judged step, no container); each
is reset, stepped, and closed. Afterwards:

- no acknowledged step is lost: every step the server answered is in the episode's stored
  trajectory (``GET /v1/episodes/{id}``), at its turn, and no more steps than were answered;
- no sandbox leaks: once the closes settle the server keeps at most its warm pool, and after a
  SIGTERM shutdown no container carries its instance label;
- memory stays flat: the server's resident set at the end of the load is within
  ``RSS_GROWTH_BOUND`` of what it was once the load reached its steady state (after the first
  ``WARMUP_FRACTION`` of the steps: imports, caches and pools have filled by then).

Retried 503s (the client's own retry on a full server) are counted and reported, not failures;
any other error is. The run is bounded by ``TIME_BOUND_S``. Marked ``soak``: the default run
leaves it out (pyproject.toml's ``addopts``), scripts/slow-tests.sh selects it; alone, it is
``TOOLGYM_SOAK_STEPS=500 .venv/bin/python -m pytest -s -m soak tests/server/test_soak.py``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from serve_kit import ServeProcess
from server_kit import WITNESS_ACTION, count_containers

from toolgym.client import AsyncEnvClient
from toolgym.client._core import RetryPolicy
from toolgym.errors import ToolGymError

pytestmark = [pytest.mark.soak, pytest.mark.docker]

STEPS = int(os.environ.get("TOOLGYM_SOAK_STEPS", "10000"))
CLIENTS = 64
WARM_POOL = 4
TIME_BOUND_S = 15 * 60.0
WARMUP_FRACTION = 0.1
RSS_GROWTH_BOUND = 50 * 1024 * 1024
"""Bytes the server's RSS may grow between the steady state's start and the load's end."""
SETTLE_S = 120.0

TOOLUSE, TOOLUSE_TASK, TOOLUSE_STEPS = "toolgym/ToolUse-v0", "tu-single-1", 6
CODEMATH, CODEMATH_TASK, CODEMATH_STEPS = "toolgym/CodeMath-v0", "count_bits-train-000", 2
CODEMATH_ACTION = "Let me count.\n```python\nprint(bin(1984577275).count('1'))\n```"
FUNCTIONCALL, FUNCTIONCALL_TASK = "toolgym/FunctionCall-v0", "fc-weather-001"
FUNCTIONCALL_ACTION = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
PLAN: list[tuple[str, str, Any, int]] = [
    (TOOLUSE, TOOLUSE_TASK, WITNESS_ACTION, TOOLUSE_STEPS),
    (CODEMATH, CODEMATH_TASK, CODEMATH_ACTION, CODEMATH_STEPS),
    (FUNCTIONCALL, FUNCTIONCALL_TASK, FUNCTIONCALL_ACTION, 1),
]
"""Each loop takes the next episode kind in turn: env, task, the action of every step, steps at most."""


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real HTTP transport, counting the status of every response (the client's retries included)."""

    def __init__(self) -> None:
        super().__init__(limits=httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2))
        self.statuses: collections.Counter[int] = collections.Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses[response.status_code] += 1
        return response


@dataclass
class Ledger:
    """What the load saw: the steps the server acknowledged per episode, the closes, the errors."""

    budget: int
    acked: dict[str, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    episodes_by_env: collections.Counter[str] = field(default_factory=collections.Counter)
    rss_trace: list[tuple[int, int]] = field(default_factory=list)
    """(steps acknowledged, server RSS in bytes) along the run: a leak climbs, a warm-up levels off."""

    @property
    def steps(self) -> int:
        return sum(self.acked.values())

    def take(self) -> bool:
        """Claim one step of the budget (False once it is spent)."""
        if self.budget <= 0:
            return False
        self.budget -= 1
        return True


def serve(tmp: Path, image: str, instance: str) -> ServeProcess:
    """A ready Docker-backed server with the soak's warm pool, under ``instance``."""
    server = ServeProcess(tmp, "--backend", "docker", "--warm-pool", str(WARM_POOL), "--db", str(tmp / "soak.db"),
                          env={"TOOLGYM_INSTANCE_ID": instance, "TOOLGYM_SANDBOX_IMAGE": image})
    return server.wait_ready(180)


async def episode_loop(client: AsyncEnvClient, ledger: Ledger, gate: asyncio.Semaphore, first: int) -> None:
    """Reset, step, close episodes of each kind in turn until the step budget is spent (bounded)."""
    for n in range(first, first + STEPS + 1):
        if ledger.budget <= 0:
            return
        env_id, task_id, action, most = PLAN[n % len(PLAN)]
        async with gate:
            try:
                reset = await client.reset(env_id, task_id)
            except ToolGymError as exc:
                ledger.errors.append(f"reset {env_id}: {exc!r}")
                continue
            episode_id = reset.episode_id
            ledger.acked[episode_id] = 0
            ledger.episodes_by_env[env_id] += 1
            for _ in range(most):
                if not ledger.take():
                    break
                try:
                    result = await client.step(episode_id, action)
                except ToolGymError as exc:
                    ledger.errors.append(f"step {env_id} {episode_id}: {exc!r}")
                    break
                ledger.acked[episode_id] += 1
                if result.info.get("status") not in ("ok", None):
                    ledger.errors.append(f"step {env_id} {episode_id}: status {result.info.get('status')}")
                if result.terminated or result.truncated:
                    break
            try:
                await client.close(episode_id)
                ledger.closed.add(episode_id)
            except ToolGymError as exc:
                ledger.errors.append(f"close {env_id} {episode_id}: {exc!r}")


async def run_load(server: ServeProcess, ledger: Ledger, transport: CountingTransport) -> tuple[int, int, float]:
    """Drive the load; return the RSS at the steady state's start and at the end, and the seconds taken."""
    gate = asyncio.Semaphore(CLIENTS)
    retry = RetryPolicy(max_retries=20, backoff_s=0.25, max_backoff_s=5.0)
    async with AsyncEnvClient(server.base_url, timeout_s=300, retry=retry, transport=transport) as client:
        started = time.monotonic()
        loops = [asyncio.create_task(episode_loop(client, ledger, gate, i)) for i in range(CLIENTS)]
        warm_mark = int(STEPS * WARMUP_FRACTION)
        rss_start = 0
        marks = [int(STEPS * q) for q in (0.25, 0.5, 0.75)]
        try:
            while not all(t.done() for t in loops):  # bounded by TIME_BOUND_S
                elapsed = time.monotonic() - started
                assert elapsed < TIME_BOUND_S, (
                    f"the soak took more than {TIME_BOUND_S:.0f} s: {ledger.steps} of {STEPS} steps acknowledged")
                if not rss_start and ledger.steps >= warm_mark:
                    rss_start = server.rss()
                    ledger.rss_trace.append((ledger.steps, rss_start))
                if marks and ledger.steps >= marks[0]:
                    marks.pop(0)
                    ledger.rss_trace.append((ledger.steps, server.rss()))
                await asyncio.sleep(0.2)
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        duration = time.monotonic() - started
        rss_end = server.rss()
        ledger.rss_trace.append((ledger.steps, rss_end))
        await verify_stored(client, ledger)
    return rss_start, rss_end, duration


async def verify_stored(client: AsyncEnvClient, ledger: Ledger) -> None:
    """Every acknowledged step is in its episode's stored trajectory, at its turn; no extra ones."""
    gate = asyncio.Semaphore(CLIENTS)

    async def check(episode_id: str, acked: int) -> str | None:
        async with gate:
            state = await client.episode(episode_id)
        turns = [s["turn"] for s in state["steps"]]
        if turns != list(range(acked)):  # a step's turn is the episode's turn before it, from 0
            return f"{episode_id}: {acked} steps acknowledged, stored turns {turns}"
        if episode_id in ledger.closed and state["status"] == "running":
            return f"{episode_id}: closed but still running"
        return None

    problems = await asyncio.gather(*(check(e, n) for e, n in ledger.acked.items()))
    lost = [p for p in problems if p]
    assert not lost, f"{len(lost)} episodes disagree with the store, e.g. {lost[:5]}"


def wait_settled(instance: str) -> int:
    """Wait (bounded) until the server keeps no more containers than its warm pool; return the count."""
    deadline = time.monotonic() + SETTLE_S
    while (left := count_containers(instance)) > WARM_POOL:
        assert time.monotonic() < deadline, f"{left} containers still there {SETTLE_S:.0f} s after the last close"
        time.sleep(0.5)
    return left


def test_soak(tmp_path: Path, root_conftest: ModuleType) -> None:
    if root_conftest.docker_problem() is not None:
        pytest.skip(root_conftest.docker_problem())
    instance = f"{root_conftest.SESSION}-soak-{uuid.uuid4().hex[:6]}"
    server = serve(tmp_path, root_conftest.IMAGE, instance)
    ledger = Ledger(budget=STEPS)
    transport = CountingTransport()
    try:
        rss_start, rss_end, duration = asyncio.run(run_load(server, ledger, transport))
        settled = wait_settled(instance)
    finally:
        code = server.stop()
        leaked = count_containers(instance)
        if leaked:
            from toolgym.server.sandbox.docker import DockerBackend

            DockerBackend(image=root_conftest.IMAGE, instance=instance).remove_owned(instance)
    growth = rss_end - rss_start
    mib = 1024 * 1024
    print(f"\nsoak: {ledger.steps} steps acknowledged (budget {STEPS}), all stored;"
          f" episodes {dict(ledger.episodes_by_env)}"
          f"\nsoak: {duration:.1f} s, {ledger.steps / duration:.1f} steps/s; responses {dict(transport.statuses)}"
          f" (503 retried: {transport.statuses[503]}); errors {len(ledger.errors)}"
          f"\nsoak: server RSS {rss_start / mib:.1f} MiB at the steady state's start, {rss_end / mib:.1f} MiB at the"
          f" end ({growth / mib:+.1f} MiB); containers after the closes settled {settled}, after shutdown {leaked};"
          f" exit code {code}"
          f"\nsoak: RSS along the run (steps: MiB) {[(n, round(b / mib, 1)) for n, b in ledger.rss_trace]}")
    assert not ledger.errors, f"{len(ledger.errors)} errors, e.g. {ledger.errors[:5]}"
    assert ledger.steps == STEPS, f"{ledger.steps} of {STEPS} steps acknowledged"
    assert leaked == 0, f"{leaked} containers of {instance} left after shutdown"
    # uvicorn re-raises SIGTERM once its graceful shutdown (the app's included) is done
    assert code in (0, -signal.SIGTERM), f"the server exited with {code}: {server.log(4000)}"
    assert rss_start > 0
    assert growth < RSS_GROWTH_BOUND, (
        f"server RSS grew {growth / mib:.1f} MiB under load (bound {RSS_GROWTH_BOUND / mib:.0f} MiB)")
