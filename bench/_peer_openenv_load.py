"""Load generator for OpenEnv's echo env, run by ``bench/peers.py`` inside OpenEnv's scratch
virtualenv (``openenv`` from PyPI), never in ToolGym's.

One client process, its output one JSON line on stdout:

- ``http_step`` / ``http_reset``: one ``httpx.Client`` (keep-alive), one request at a time,
  ``POST /reset`` then ``POST /step`` with a ``call_tool`` action (OpenEnv's HTTP routes are
  stateless: each request builds an env, acts, closes it);
- ``ws_step`` / ``ws_reset``: OpenEnv's own client (``GenericEnvClient``, its WebSocket
  session on ``/ws``), one request at a time;
- ``http_c`` / ``ws_c``: aggregate steps/s with ``--clients`` concurrent clients for
  ``--seconds`` (HTTP: ``httpx.AsyncClient`` pools of 8 connections; WebSocket: that
  many ``GenericEnvClient`` sessions), all in this one asyncio loop.

Run: ``python _peer_openenv_load.py URL [--steps 300] [--clients 32] [--seconds 8] [--action JSON]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
from openenv.core.generic_client import GenericEnvClient

ACTION: dict[str, Any] = {"message": "hello"}
"""The step's action; ``--action`` replaces it (the MCP echo env takes a ``call_tool`` action)."""


def _check(body: Any) -> None:
    if "hello" not in json.dumps(body):
        raise RuntimeError(f"unexpected echo answer: {str(body)[:300]}")


def http_sequential(url: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"reset": [], "step": []}
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(n + 5):
            t = time.perf_counter()
            r = c.post("/reset", json={})
            r.raise_for_status()
            dt_reset = time.perf_counter() - t
            t = time.perf_counter()
            r = c.post("/step", json={"action": ACTION})
            r.raise_for_status()
            dt_step = time.perf_counter() - t
            _check(r.json())
            if i >= 5:  # warm-up excluded
                out["reset"].append(dt_reset)
                out["step"].append(dt_step)
    return out


async def ws_sequential(url: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"reset": [], "step": []}
    client = GenericEnvClient(base_url=url)
    await client.connect()
    try:
        for i in range(n + 5):
            t = time.perf_counter()
            await client.reset()
            dt_reset = time.perf_counter() - t
            t = time.perf_counter()
            result = await client.step(ACTION)
            dt_step = time.perf_counter() - t
            if i == 0:
                _check(result.observation)
            if i >= 5:
                out["reset"].append(dt_reset)
                out["step"].append(dt_step)
    finally:
        await client.close()
    return out


async def http_concurrent(url: str, clients: int, seconds: float) -> dict[str, Any]:
    count = 0
    errors = 0
    # httpcore's pool scans all its connections on every request, so one pool of 32 slows the
    # client itself; a pool per 8 workers keeps the client out of the measurement.
    pools = [httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=8))
             for _ in range((clients + 7) // 8)]
    try:
        for i in range(clients):  # warm the connections
            (await pools[i % len(pools)].post("/step", json={"action": ACTION})).raise_for_status()
        deadline = time.perf_counter() + seconds

        async def worker(c: httpx.AsyncClient) -> None:
            nonlocal count, errors
            while time.perf_counter() < deadline:
                r = await c.post("/step", json={"action": ACTION})
                if r.status_code == 200:
                    count += 1
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(pools[i % len(pools)]) for i in range(clients)))
        wall = time.perf_counter() - t0
    finally:
        for c in pools:
            await c.aclose()
    return {"steps": count, "wall_s": wall, "steps_per_s": count / wall, "errors": errors}


async def ws_concurrent(url: str, clients: int, seconds: float) -> dict[str, Any]:
    sessions = [GenericEnvClient(base_url=url) for _ in range(clients)]
    count = 0
    try:
        for s in sessions:
            await s.connect()
            await s.reset()
        deadline = time.perf_counter() + seconds

        async def worker(s: GenericEnvClient) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await s.step(ACTION)
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in sessions))
        wall = time.perf_counter() - t0
    finally:
        for s in sessions:
            try:
                await s.close()
            except Exception:
                pass
    return {"steps": count, "wall_s": wall, "steps_per_s": count / wall, "errors": 0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--action", default=None, help="the step's action as JSON")
    a = p.parse_args()
    if a.action:
        ACTION.clear()
        ACTION.update(json.loads(a.action))
    out: dict[str, Any] = {}
    http = http_sequential(a.url, a.steps)
    out["http_reset"], out["http_step"] = http["reset"], http["step"]
    ws = asyncio.run(ws_sequential(a.url, a.steps))
    out["ws_reset"], out["ws_step"] = ws["reset"], ws["step"]
    if a.clients > 0:
        out["http_c"] = asyncio.run(http_concurrent(a.url, a.clients, a.seconds))
        out["ws_c"] = asyncio.run(ws_concurrent(a.url, a.clients, a.seconds))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
