"""One client, many concurrent episodes: does the client stay out of the way as N grows?

One ``toolgym serve`` (process backend; FunctionCall-v0 needs no sandbox) runs in a child
process on a free 127.0.0.1 port, so the client does not share its GIL. This process runs N
workers (N = 8, 64, 256, 1000); each plays FunctionCall episodes one after another (reset
``fc-weather-001``, its gold call, close: three requests, one step) until the run has played
``max(--per-n * N, --episodes)`` episodes or ``--max-seconds`` have passed. Every worker of a
run shares one client; the transports compared:

- ``http``: ``AsyncEnvClient(base_url)`` as shipped: at most ``max_connections`` (256) requests
  out, each on a one-connection lane (``client/_lanes.py``), the rest queued in the client;
- ``http/K``: the same with ``max_connections=K`` (e.g. ``http/16``, ``http/1024``);
- ``pool``: every request through ONE httpx pool of up to 1024 connections (the client before
  the lanes: httpcore's pool scans grow with the requests out); ``pool16``: the workers spread
  over 16 such clients, the old workaround;
- ``ws``: ``AsyncEnvClient(base_url, protocol="ws")``, one WebSocket for every episode;
- ``aiohttp``: the same requests (built by ``toolgym.client._core``) sent by one
  ``aiohttp.ClientSession`` (up to 1024 connections), when aiohttp is installed (not a
  dependency: a comparison only).

HTTP/2 is not among them: uvicorn serves HTTP/1.1 only, so httpx's ``http2=True`` would fall
back to HTTP/1.1 against this server.

Reported per run: steps/s (= episodes/s here), requests/s, step latency p50/p99 as the client
saw it, the CPU milliseconds the client process and the server process spent per episode, and
the server's ceiling (1000 / its CPU ms per episode: episodes/s if the server had a whole core to
itself, and the client cost nothing). Then the issue's targets for the ``http`` rows: steps/s at
the largest N (and at 256) against N = 8, and the best FunctionCall episodes/s of one client.

Run: ``.venv/bin/python bench/client_scaling.py [--n 8,64,256,1000] [--transports http,pool,ws,aiohttp]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import (
    FUNCTIONCALL,
    FUNCTIONCALL_ACTION,
    FUNCTIONCALL_TASK,
    SubprocessServer,
    ms,
    print_footer,
    print_header,
    table,
)
from _common import summarize as stats

TICK = os.sysconf("SC_CLK_TCK")
Episode = Callable[[], Awaitable[float]]
"""Plays one episode; returns the step's latency in seconds."""


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class EnvClientPlayer:
    """Episodes through ``AsyncEnvClient`` (one, or ``shards`` of them round-robin)."""

    def __init__(self, base_url: str, protocol: str, shards: int = 1, max_connections: int | None = None,
                 one_pool: bool = False) -> None:
        import httpx

        from toolgym.client import AsyncEnvClient

        options: dict[str, Any] = {} if max_connections is None else {"max_connections": max_connections}
        if one_pool:  # every request through one httpx pool of 1024 connections, as before the lanes
            pool = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
            options = {"max_connections": 1024, "transport": httpx.AsyncHTTPTransport(limits=pool)}
        self.clients = [AsyncEnvClient(base_url, timeout_s=300.0, protocol=protocol, **options)  # type: ignore[arg-type]
                        for _ in range(shards)]
        self._next = 0

    def episode(self) -> Episode:
        client = self.clients[self._next % len(self.clients)]
        self._next += 1

        async def play() -> float:
            reset = await client.reset(FUNCTIONCALL, FUNCTIONCALL_TASK, seed=0)
            t = time.perf_counter()
            step = await client.step(reset.episode_id, FUNCTIONCALL_ACTION)
            took = time.perf_counter() - t
            assert step.reward == 1.0, step
            await client.close(reset.episode_id)
            return took

        return play

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class AiohttpPlayer:
    """The same requests (``_core``'s calls, with their idempotency keys), sent by aiohttp."""

    def __init__(self, base_url: str) -> None:
        import aiohttp

        self.base_url = base_url
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024),
                                             timeout=aiohttp.ClientTimeout(total=300))

    async def _send(self, call: Any) -> Any:
        async with self.session.request(call.method, self.base_url + call.path, json=call.json,
                                        headers=call.headers) as response:
            if response.status >= 400:
                raise RuntimeError(f"{call.method} {call.path}: {response.status} {await response.text()}")
            return await response.json() if response.status != 204 else None

    def episode(self) -> Episode:
        from toolgym.client import _core

        async def play() -> float:
            reset = await self._send(_core.reset_call(FUNCTIONCALL, FUNCTIONCALL_TASK, 0, None))
            t = time.perf_counter()
            step = await self._send(_core.step_call(reset["episode_id"], FUNCTIONCALL_ACTION, None, None, None))
            took = time.perf_counter() - t
            assert step["reward"] == 1.0, step
            await self._send(_core.close_call(reset["episode_id"]))
            return took

        return play

    async def aclose(self) -> None:
        await self.session.close()


def make_player(transport: str, base_url: str) -> Any:
    if transport == "http":
        return EnvClientPlayer(base_url, "http")
    if transport == "ws":
        return EnvClientPlayer(base_url, "ws")
    if transport.startswith("http/"):
        return EnvClientPlayer(base_url, "http", max_connections=int(transport.removeprefix("http/")))
    if transport == "pool":
        return EnvClientPlayer(base_url, "http", one_pool=True)
    if transport == "pool16":
        return EnvClientPlayer(base_url, "http", shards=16, one_pool=True)
    if transport == "aiohttp":
        return AiohttpPlayer(base_url)
    raise SystemExit(f"unknown transport {transport!r}")


async def run(transport: str, base_url: str, n: int, total: int, max_s: float) -> dict[str, Any]:
    player = make_player(transport, base_url)
    steps: list[float] = []
    errors: list[str] = []
    remaining = total
    deadline = time.monotonic() + max_s

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            try:
                steps.append(await player.episode()())
            except Exception as exc:  # counted and shown, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    try:
        await player.episode()()  # connects (and opens the socket) before the clock starts
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(n)))
        wall = time.perf_counter() - t0
    finally:
        await player.aclose()
    return {"steps": steps, "errors": errors, "wall": wall}


def print_targets(rates: dict[tuple[str, int], list[float]], cpu: dict[tuple[str, int], list[float]],
                  ns: list[int]) -> None:
    """The issue's one-client targets for every transport run at N = 8 and above (medians over rounds).

    Beside each steps/s ratio, the ratio of the CPU (client + server) one episode cost: on a
    shared machine the steps/s of a CPU-bound run (large N) fall with the load while those of a
    latency-bound one (N = 8) fall less, so the CPU ratio shows whether the client itself degrades.
    """
    rows = []
    for transport in dict.fromkeys(t for t, _ in rates):
        rate = {n: statistics.median(r) for (t, n), r in rates.items() if t == transport}
        cost = {n: statistics.median(c) for (t, n), c in cpu.items() if t == transport}
        for n in ns:
            if n > 8 and 8 in rate and n in rate:
                ratio = rate[n] / rate[8]
                rows.append([transport, f"steps/s at N={n} vs N=8", f"{rate[n]:.0f} / {rate[8]:.0f}",
                             f"{ratio:.2f}x", ">= 1x", "yes" if ratio >= 1 else "NO",
                             f"{cost[n]:.1f} / {cost[8]:.1f} ({cost[n] / cost[8]:.2f}x)"])
        best = max(rate.values())
        rows.append([transport, "FunctionCall episodes/s, best N", f"{best:.0f}", "", ">= 500/s",
                     "yes" if best >= 500 else "NO", ""])
    table(["transport", "target (issue)", "measured", "ratio", "goal", "met", "CPU ms/ep, N vs 8"], rows,
          "Targets (same run; medians over rounds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="8,64,256,1000", help="concurrent episodes (comma-separated)")
    parser.add_argument("--transports", default="http,pool,ws,aiohttp",
                        help="http, http/K (max_connections=K), pool, pool16, ws, aiohttp")
    parser.add_argument("--per-n", type=int, default=2, help="episodes per worker at least")
    parser.add_argument("--episodes", type=int, default=600, help="episodes per run at least")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="no new episode after this (per run)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every (N, transport) run, interleaved")
    args = parser.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    transports = args.transports.split(",")
    if "aiohttp" in transports:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            print("aiohttp is not installed: its runs are skipped (pip install aiohttp to add them)")
            transports.remove("aiohttp")
    print_header("One client, N concurrent FunctionCall episodes (no sandbox)", {
        "N": args.n, "transports": ",".join(transports), "episode": "reset + 1 step + close",
        "episodes/run": f"max({args.per_n}*N, {args.episodes}), at most {args.max_seconds:.0f} s",
        "server": "toolgym serve (child process), process backend, --warm-pool 0", "rounds": args.rounds,
    })
    rows, problems = [], []
    rates: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        server = SubprocessServer("process", tmp, "scale", warm_pool=0, max_live=2 * max(ns) + 64)
        print(f"server    {' '.join(server.cmd)}")
        with server:
            assert server.proc is not None
            for _ in range(args.rounds):
                for n in ns:
                    for transport in transports:
                        total = max(args.per_n * n, args.episodes)
                        me0, srv0 = cpu_s(os.getpid()), cpu_s(server.proc.pid)
                        res = asyncio.run(run(transport, server.base_url, n, total, args.max_seconds))
                        me, srv = cpu_s(os.getpid()) - me0, cpu_s(server.proc.pid) - srv0
                        done, wall = len(res["steps"]), res["wall"]
                        s = stats(res["steps"])
                        srv_ms = srv / max(done, 1) * 1000
                        rates.setdefault((transport, n), []).append(done / wall)
                        cpu.setdefault((transport, n), []).append((me + srv) / max(done, 1) * 1000)
                        rows.append([transport, str(n), str(done), f"{wall:.1f}", f"{done / wall:.0f}",
                                     f"{3 * done / wall:.0f}", ms(s["p50"]), ms(s["p99"]),
                                     f"{me / max(done, 1) * 1000:.2f}", f"{srv_ms:.2f}",
                                     f"{1000 / srv_ms:.0f}" if srv_ms else "-",
                                     f"{os.getloadavg()[0]:.1f}", str(len(res["errors"]))])
                        problems += [f"{transport} N={n}: {e}" for e in res["errors"][:3]]
                        print("  " + "  ".join(rows[-1]), flush=True)
    table(["transport", "N", "episodes", "wall s", "steps/s", "requests/s", "step p50 ms", "step p99 ms",
           "client CPU ms/ep", "server CPU ms/ep", "server ceiling ep/s", "load", "errors"], rows,
          "Throughput of one client (latencies as the client saw them; CPU from /proc, user+system)")
    print_targets(rates, cpu, ns)
    if problems:
        print("\nproblems:\n  " + "\n  ".join(problems))
    print_footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
