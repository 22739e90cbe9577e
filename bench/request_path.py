"""The server's own cost of a request, one client at rest: HTTP vs ``/v1/ws``, and two builds side by side.

Each server is the same app as ``toolgym serve`` (Docker backend, warm pool 2), started by
``bench/_serve.py`` with asyncio + h11 (as ``peers.py`` runs it, so the figures compare with
its OpenEnv rows). With ``--baseline DIR`` a second server serves ToolGym's package from DIR
(``PYTHONPATH``, a directory laid out as ``scripts/typecheck.sh`` lays one out, e.g. an older
commit), and the two are measured in turn, ``--rounds`` times, so both see the same load.

Per server, one client, one request at a time:

- FunctionCall step (no sandbox: HTTP, auth, episode lock, the env, the store's group
  commit): reset + step + close per sample, the step timed; over HTTP (``httpx.Client``)
  and over ``/v1/ws`` (one socket);
- ToolUse tool step (one run in the episode's container) over HTTP and ``/v1/ws``;
- warm ToolUse reset over HTTP (the warm pool full before each, untimed);
- the server's CPU per FunctionCall episode (reset + step + close over HTTP, sequential),
  from ``/proc``; and FunctionCall episodes/s from 64 workers on one ``AsyncEnvClient``.

Run: ``.venv/bin/python bench/request_path.py [--baseline /tmp/before] [--rounds 2] [--steps 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

import _toolgym_load as tg
import httpx
from _common import (
    FUNCTIONCALL,
    FUNCTIONCALL_ACTION,
    FUNCTIONCALL_TASK,
    SubprocessServer,
    docker_problem,
    ms,
    print_footer,
    print_header,
    summarize,
    table,
    wait_pool_full_http,
)
from throughput import _cpu_s

WARM_POOL = 2
FC_RESET = {"env_id": FUNCTIONCALL, "task_id": FUNCTIONCALL_TASK, "seed": 0}


def fc_http(base_url: str, n: int, pid: int) -> tuple[list[float], float]:
    """``n`` FunctionCall episodes over HTTP: the step latencies and the server's CPU s per episode."""
    out: list[float] = []
    with httpx.Client(base_url=base_url, timeout=60) as c:
        for _ in range(5):  # warm the connection, untimed
            eid = c.post("/v1/episodes", json=FC_RESET).json()["episode_id"]
            c.post(f"/v1/episodes/{eid}/step", json={"action": FUNCTIONCALL_ACTION})
            c.delete(f"/v1/episodes/{eid}")
        cpu0 = _cpu_s(pid)
        for _ in range(n):
            r = c.post("/v1/episodes", json=FC_RESET)
            r.raise_for_status()
            eid = r.json()["episode_id"]
            t = time.perf_counter()
            r = c.post(f"/v1/episodes/{eid}/step", json={"action": FUNCTIONCALL_ACTION})
            out.append(time.perf_counter() - t)
            r.raise_for_status()
            c.delete(f"/v1/episodes/{eid}").raise_for_status()
        return out, (_cpu_s(pid) - cpu0) / n


async def fc_ws(base_url: str, n: int) -> list[float]:
    """``n`` FunctionCall episodes over one ``/v1/ws`` socket: the step latencies."""
    from websockets.asyncio.client import connect

    out: list[float] = []
    async with connect(base_url.replace("http://", "ws://") + "/v1/ws", max_size=None) as ws:
        async def call(op: str, **kw: Any) -> Any:
            await ws.send(json.dumps({"id": 1, "op": op, **kw}))
            answer = json.loads(await ws.recv())
            if answer["status"] >= 300:
                raise RuntimeError(f"/v1/ws {op}: {str(answer)[:300]}")
            return answer["body"]

        for i in range(n + 5):
            eid = (await call("reset", body=FC_RESET))["episode_id"]
            t = time.perf_counter()
            await call("step", episode_id=eid, body={"action": FUNCTIONCALL_ACTION})
            dt = time.perf_counter() - t
            await call("close", episode_id=eid)
            if i >= 5:
                out.append(dt)
    return out


def warm_resets(base_url: str, n: int) -> list[float]:
    """``n`` ToolUse resets, each with the warm pool full (waited for, untimed), closed right after."""
    out: list[float] = []
    with httpx.Client(base_url=base_url, timeout=60) as c:
        for _ in range(n):
            wait_pool_full_http(c, WARM_POOL)
            t = time.perf_counter()
            r = c.post("/v1/episodes", json=tg.RESET_BODY)
            out.append(time.perf_counter() - t)
            r.raise_for_status()
            c.delete(f"/v1/episodes/{r.json()['episode_id']}").raise_for_status()
    return out


def measure(server: SubprocessServer, steps: int, into: dict[str, list[float]]) -> None:
    """One round of every figure against ``server``, appended to ``into``."""
    assert server.proc is not None
    fc, cpu = fc_http(server.base_url, steps, server.proc.pid)
    into["FC step, HTTP"] += fc
    into["server CPU ms per FC episode"].append(cpu * 1000)
    into["FC step, /v1/ws"] += asyncio.run(fc_ws(server.base_url, steps))
    into["tool step, HTTP"] += tg.sequential_tool_steps(server.base_url, steps)
    into["tool step, /v1/ws"] += asyncio.run(tg.ws_tool_steps(server.base_url, steps))
    into["warm reset, HTTP"] += warm_resets(server.base_url, max(10, steps // 10))
    load = asyncio.run(tg.functioncall_episodes(server.base_url, 64, 256))
    into["FC episodes/s, 64 workers, HTTP"].append(load["episodes_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=None, metavar="DIR", help="also serve ToolGym's package from DIR")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="sequential steps per figure, server and round")
    parser.add_argument("--uvicorn", default="--loop asyncio --http h11", help="uvicorn options for _serve.py")
    args = parser.parse_args()
    why = docker_problem()
    if why is not None:
        print(f"request_path: skipped: {why}")
        return 0
    print_header("ToolGym: the server's own cost of a request, one client at rest",
                 {"rounds": args.rounds, "steps": args.steps, "uvicorn": args.uvicorn, "baseline": args.baseline,
                  "python": sys.version.split()[0]})
    opts = args.uvicorn.split()
    builds: dict[str, dict[str, str] | None] = {"this checkout": None}
    if args.baseline:
        builds = {"baseline": {"PYTHONPATH": os.path.abspath(args.baseline)}, **builds}
    samples: dict[str, dict[str, list[float]]] = {b: defaultdict(list) for b in builds}
    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        servers = {b: SubprocessServer("docker", tmp, f"rp{i}", warm_pool=WARM_POOL, extra_env=env, uvicorn=opts)
                   for i, (b, env) in enumerate(builds.items())}
        try:
            for s in servers.values():
                s.start()
            for _ in range(args.rounds):
                for b, s in servers.items():
                    measure(s, args.steps, samples[b])
        finally:
            for s in servers.values():
                s.stop()
    rows: list[list[str]] = []
    for figure in next(iter(samples.values())):
        for b, smp in samples.items():
            st = summarize(smp[figure])
            if "/s" in figure or "CPU" in figure:
                rows.append([figure, b, f"{st['p50']:.2f}", "", str(len(smp[figure]))])
            else:
                rows.append([figure, b, ms(st["p50"]), ms(st["p99"]), str(len(smp[figure]))])
    table(["figure", "build", "p50 (ms, or the figure)", "p99 (ms)", "n"], rows,
          f"One client at rest ({args.rounds} rounds, servers measured in turn)")
    print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
