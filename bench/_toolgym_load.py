"""ToolGym's side of ``bench/peers.py``: each function drives one ``toolgym serve`` (Docker
backend) on 127.0.0.1 and returns raw samples (seconds) or rates; ``peers.py`` prints them.

Sandboxed episodes are ToolUse-v0 (``tu-single-1``, ``max_turns`` raised so that one episode
can take many tool steps); a tool step is one ``<tool_call>`` to a built-in tool, i.e. one run
in the episode's container. FunctionCall-v0 episodes touch no sandbox.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from _common import (
    FUNCTIONCALL,
    FUNCTIONCALL_ACTION,
    FUNCTIONCALL_TASK,
    TOOL_ACTION,
    TOOLUSE,
    TOOLUSE_TASK,
    wait_pool_full_http,
)

RESET_BODY: dict[str, Any] = {"env_id": TOOLUSE, "task_id": TOOLUSE_TASK, "seed": 0, "options": {"max_turns": 200}}
PER_EPISODE = 150
"""Tool steps per episode in the sequential runs (ToolUse allows at most 200 turns)."""


def final_answer() -> str:
    """A ToolUse answer that ends ``tu-single-1`` (its reference answer)."""
    from toolgym.envs.tooluse.builtin import builtin_tasks

    answer = next(r["answer"] for _, r in builtin_tasks() if r["id"] == TOOLUSE_TASK)
    return f"The answer is {answer}."


def _ok(r: httpx.Response) -> Any:
    r.raise_for_status()
    return r.json() if r.content else None


def _tool_ok(body: Any) -> None:
    if body.get("info", {}).get("status", "ok") != "ok" or body.get("terminated"):
        raise RuntimeError(f"unexpected tool step result: {str(body)[:300]}")


# --- one client, one request at a time ---------------------------------------------------------------
def sequential_tool_steps(base_url: str, steps: int) -> list[float]:
    """``steps`` tool steps over HTTP (``httpx.Client``, keep-alive), on one live episode at a
    time (a new one every ``PER_EPISODE`` steps, within the turn limit; the reset untimed)."""
    out: list[float] = []
    with httpx.Client(base_url=base_url, timeout=60) as c:
        eid = _ok(c.post("/v1/episodes", json=RESET_BODY))["episode_id"]
        try:
            for i in range(steps + 5):
                if i and i % PER_EPISODE == 0:
                    c.delete(f"/v1/episodes/{eid}")
                    eid = _ok(c.post("/v1/episodes", json=RESET_BODY))["episode_id"]
                t = time.perf_counter()
                body = _ok(c.post(f"/v1/episodes/{eid}/step", json={"action": TOOL_ACTION}))
                dt = time.perf_counter() - t
                _tool_ok(body)
                if i >= 5:
                    out.append(dt)
        finally:
            c.delete(f"/v1/episodes/{eid}")
    return out


def ws_available(base_url: str) -> str | None:
    """None when the server has the WebSocket route ``/v1/ws`` and this venv can speak it."""
    status = httpx.get(base_url + "/v1/ws", timeout=10).status_code
    if status == 404:
        return "the server has no /v1/ws route (GET answered 404)"
    try:
        import websockets  # noqa: F401
    except ImportError:
        return "the websockets package is not installed (pip install websockets)"
    return None


async def ws_tool_steps(base_url: str, steps: int) -> list[float]:
    """``steps`` tool steps over ``/v1/ws`` (one socket, one frame at a time), a new episode
    every ``PER_EPISODE`` steps as over HTTP."""
    from websockets.asyncio.client import connect

    out: list[float] = []
    async with connect(base_url.replace("http://", "ws://") + "/v1/ws", max_size=None) as ws:
        async def call(i: int, op: str, **kw: Any) -> Any:
            await ws.send(json.dumps({"id": i, "op": op, **kw}))
            answer = json.loads(await ws.recv())
            if answer["status"] >= 300:
                raise RuntimeError(f"/v1/ws {op}: {str(answer)[:300]}")
            return answer["body"]

        eid = (await call(0, "reset", body=RESET_BODY))["episode_id"]
        try:
            for i in range(steps + 5):
                if i and i % PER_EPISODE == 0:
                    await call(-1, "close", episode_id=eid)
                    eid = (await call(0, "reset", body=RESET_BODY))["episode_id"]
                t = time.perf_counter()
                body = await call(i + 1, "step", episode_id=eid, body={"action": TOOL_ACTION})
                dt = time.perf_counter() - t
                _tool_ok(body)
                if i >= 5:
                    out.append(dt)
        finally:
            await call(-1, "close", episode_id=eid)
    return out


def rest_resets_and_endings(base_url: str, episodes: int, warm_pool: int, settle_s: float) -> dict[str, list[float]]:
    """Per episode, with the warm pool full first (untimed): reset, one tool step, then every
    other episode ends with its final answer and the rest are closed live (DELETE)."""
    out: dict[str, list[float]] = defaultdict(list)
    answer = final_answer()
    with httpx.Client(base_url=base_url, timeout=60) as c:
        for i in range(episodes):
            if wait_pool_full_http(c, warm_pool, timeout_s=120) > 0:
                time.sleep(settle_s)
            t = time.perf_counter()
            eid = _ok(c.post("/v1/episodes", json=RESET_BODY))["episode_id"]
            out["reset"].append(time.perf_counter() - t)
            _tool_ok(_ok(c.post(f"/v1/episodes/{eid}/step", json={"action": TOOL_ACTION})))
            if wait_pool_full_http(c, warm_pool, timeout_s=120) > 0:
                time.sleep(settle_s)
            if i % 2 == 0:
                t = time.perf_counter()
                body = _ok(c.post(f"/v1/episodes/{eid}/step", json={"action": answer}))
                out["final step"].append(time.perf_counter() - t)
                if not (body.get("terminated") or body.get("truncated")):
                    raise RuntimeError(f"the final answer did not end the episode: {str(body)[:300]}")
                c.delete(f"/v1/episodes/{eid}")
            else:
                t = time.perf_counter()
                r = c.delete(f"/v1/episodes/{eid}")
                out["DELETE live"].append(time.perf_counter() - t)
                r.raise_for_status()
    return out


# --- many at once, one AsyncEnvClient ------------------------------------------------------------------
async def paced_resets(base_url: str, rate: float, count: int) -> dict[str, Any]:
    """Open loop: a ToolUse reset every ``1/rate`` s (each closed right after, untimed), so
    resets arrive at ``rate`` whatever their latency."""
    from toolgym.client import AsyncEnvClient

    lat: list[float] = []
    closes: list[asyncio.Task[None]] = []
    async with AsyncEnvClient(base_url, timeout_s=300.0, max_connections=64) as client:
        async def one() -> None:
            t = time.perf_counter()
            r = await client.reset(TOOLUSE, TOOLUSE_TASK, seed=0)
            lat.append(time.perf_counter() - t)
            await client.close(r.episode_id)

        t0 = time.perf_counter()
        for i in range(count):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            closes.append(asyncio.create_task(one()))
        await asyncio.gather(*closes)
    return {"reset": lat, "rate": rate, "count": count}


async def _workers(n: int, total: int, job: Callable[[int], Awaitable[None]]) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await job(remaining)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n)))
    return time.perf_counter() - t0


async def fresh_episodes(base_url: str, workers: int, episodes: int) -> dict[str, Any]:
    """Closed loop: ``workers`` workers play reset + one tool step + close until ``episodes``."""
    from toolgym.client import AsyncEnvClient

    async with AsyncEnvClient(base_url, timeout_s=300.0, max_connections=16) as client:
        async def job(_: int) -> None:
            r = await client.reset(TOOLUSE, TOOLUSE_TASK, seed=0)
            await client.step(r.episode_id, TOOL_ACTION)
            await client.close(r.episode_id)

        wall = await _workers(workers, episodes, job)
    return {"workers": workers, "episodes": episodes, "wall_s": wall, "episodes_per_s": episodes / wall}


async def functioncall_episodes(base_url: str, workers: int, episodes: int, protocol: str = "http") -> dict[str, Any]:
    """FunctionCall reset + gold step + close from ``workers`` workers on ONE AsyncEnvClient
    speaking ``protocol`` (``http``: its connection pool; ``ws``: one ``/v1/ws`` session)."""
    from toolgym.client import AsyncEnvClient

    async with AsyncEnvClient(base_url, timeout_s=300.0, protocol=protocol) as client:
        async def job(_: int) -> None:
            r = await client.reset(FUNCTIONCALL, FUNCTIONCALL_TASK, seed=0)
            await client.step(r.episode_id, FUNCTIONCALL_ACTION)
            await client.close(r.episode_id)

        await _workers(workers, workers, job)  # warm the connections
        wall = await _workers(workers, episodes, job)
    return {"workers": workers, "episodes": episodes, "wall_s": wall, "episodes_per_s": episodes / wall,
            "protocol": protocol}


# --- 256 live sandboxed episodes -----------------------------------------------------------------------
class LiveEpisodes:
    """Many live ToolUse episodes, opened by batch resets and closed by concurrent DELETEs."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.ids: list[str] = []

    async def open(self, n: int, chunk: int = 64) -> float:
        t0 = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=600) as c:
            while len(self.ids) < n:
                k = min(chunk, n - len(self.ids))
                results = _ok(await c.post("/v1/batch/reset", json={"resets": [RESET_BODY] * k}))["results"]
                bad = [r for r in results if not r["ok"]]
                self.ids += [r["result"]["episode_id"] for r in results if r["ok"]]
                if bad:
                    raise RuntimeError(f"{len(bad)} batch resets failed: {str(bad[0])[:300]}")
        return time.perf_counter() - t0

    async def batch_steps(self, rounds: int) -> dict[str, Any]:
        """``rounds`` POST /v1/batch/step, each with one tool step for every live episode."""
        lat: list[float] = []
        async with httpx.AsyncClient(base_url=self.base_url, timeout=600) as c:
            body = {"steps": [{"episode_id": e, "action": TOOL_ACTION} for e in self.ids]}
            t0 = time.perf_counter()
            for _ in range(rounds):
                t = time.perf_counter()
                results = _ok(await c.post("/v1/batch/step", json=body))["results"]
                lat.append(time.perf_counter() - t)
                bad = [r for r in results if not r["ok"]]
                if bad:
                    raise RuntimeError(f"{len(bad)} batch steps failed: {str(bad[0])[:300]}")
            wall = time.perf_counter() - t0
        steps = rounds * len(self.ids)
        return {"episodes": len(self.ids), "rounds": rounds, "steps": steps, "wall_s": wall,
                "steps_per_s": steps / wall, "request": lat}

    async def client_steps(self, concurrency: int, steps: int, protocol: str = "http") -> dict[str, Any]:
        """``steps`` single tool steps from ONE AsyncEnvClient speaking ``protocol``, with
        ``concurrency`` workers; worker ``w`` steps the episodes ``w, w+c, ...`` in turn, so no
        two steps share one."""
        from toolgym.client import AsyncEnvClient

        per_worker = steps // concurrency
        lat: list[float] = []
        async with AsyncEnvClient(self.base_url, timeout_s=600.0, protocol=protocol) as client:
            async def worker(w: int) -> None:
                mine = self.ids[w::concurrency]
                for k in range(per_worker):
                    t = time.perf_counter()
                    await client.step(mine[k % len(mine)], TOOL_ACTION)
                    lat.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            wall = time.perf_counter() - t0
        return {"concurrency": concurrency, "steps": len(lat), "wall_s": wall, "steps_per_s": len(lat) / wall,
                "step": lat, "protocol": protocol}

    async def close_all(self, concurrency: int = 16) -> float:
        from toolgym.client import AsyncEnvClient

        ids = list(self.ids)
        async with AsyncEnvClient(self.base_url, timeout_s=600.0) as client:
            async def job(i: int) -> None:
                await client.close(ids[i])

            wall = await _workers(concurrency, len(ids), job)
        self.ids = []
        return wall
