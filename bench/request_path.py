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
  from ``/proc``; and FunctionCall episodes/s from 64 workers on one ``AsyncEnvClient``;
- the app alone: the same episodes sent straight into the ASGI app in a child process (no
  socket, no HTTP parser; process backend), CPU and wall ms per episode, best of three
  passes: the figure the machine's other users move least, so the one to attribute changes by.

Run: ``.venv/bin/python bench/request_path.py [--baseline /tmp/before] [--rounds 2] [--steps 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
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


async def _asgi_call(app: Any, method: str, path: str, body: Any = None) -> Any:
    """One request straight into the ASGI app (no socket, no HTTP parser); its JSON answer."""
    raw = json.dumps(body).encode() if body is not None else b""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(raw)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "headers": headers, "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234), "root_path": ""}
    sent = False
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)  # the request never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(scope, receive, send)
    data = b"".join(m.get("body", b"") for m in out[1:])
    if out[0]["status"] >= 300:
        raise RuntimeError(f"{method} {path}: {out[0]['status']} {data[:300]!r}")
    return json.loads(data) if data else None


async def asgi_cpu(episodes: int) -> tuple[float, float]:
    """The app alone, in this process (process backend, no warm pool): CPU and wall ms per FunctionCall episode.

    No socket and no HTTP parser, so this is the app's own cost (middleware, routing,
    dependencies, validation, the manager, the store's writer thread), the figure least moved
    by the machine's other users; best of three passes.
    """
    from toolgym.server import Settings, create_app
    from toolgym.server.sandbox.process import ProcessBackend

    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        settings = Settings(host="127.0.0.1", port=1, db_path=os.path.join(tmp, "asgi.db"), warm_pool_size=0,
                            instance_id="bench-asgi")
        app = create_app(settings, backend=ProcessBackend())
        async with app.router.lifespan_context(app):
            async def episode() -> None:
                r = await _asgi_call(app, "POST", "/v1/episodes", FC_RESET)
                await _asgi_call(app, "POST", f"/v1/episodes/{r['episode_id']}/step", {"action": FUNCTIONCALL_ACTION})
                await _asgi_call(app, "DELETE", f"/v1/episodes/{r['episode_id']}")

            for _ in range(50):
                await episode()
            passes = []
            for _ in range(3):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for _ in range(episodes):
                    await episode()
                passes.append(((time.process_time() - cpu0) / episodes * 1e3,
                               (time.perf_counter() - wall0) / episodes * 1e3))
            return min(passes)


def asgi_figures(env: dict[str, str] | None, episodes: int) -> tuple[float, float]:
    """``asgi_cpu`` in a child process (so a baseline build is imported alone)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_") and k != "PYTHONPATH"}
    child_env.update(env or {})
    out = subprocess.run([sys.executable, __file__, "--asgi-child", str(episodes)], env=child_env, check=True,
                         capture_output=True, text=True, timeout=600).stdout.split()
    return float(out[-2]), float(out[-1])


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
    parser.add_argument("--asgi-episodes", type=int, default=500, help="episodes per pass of the in-process figure")
    parser.add_argument("--asgi-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.asgi_child is not None:
        logging.disable(logging.WARNING)
        cpu, wall = asyncio.run(asgi_cpu(args.asgi_child))
        print(f"{cpu:.4f} {wall:.4f}")
        return 0
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
                for b, env in builds.items():
                    cpu, wall = asgi_figures(env, args.asgi_episodes)
                    samples[b]["app alone (in-process), CPU ms per FC episode"].append(cpu)
                    samples[b]["app alone (in-process), wall ms per FC episode"].append(wall)
        finally:
            for s in servers.values():
                s.stop()
    rows: list[list[str]] = []
    for figure in next(iter(samples.values())):
        for b, smp in samples.items():
            st = summarize(smp[figure])
            if "/s" in figure or "per FC episode" in figure:
                rows.append([figure, b, f"{st['p50']:.2f}", "", str(len(smp[figure]))])
            else:
                rows.append([figure, b, ms(st["p50"]), ms(st["p99"]), str(len(smp[figure]))])
    table(["figure", "build", "p50 (ms, or the figure)", "p99 (ms)", "n"], rows,
          f"One client at rest ({args.rounds} rounds, servers measured in turn)")
    print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
