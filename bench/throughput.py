"""Throughput of one server under N concurrent episodes (Docker backend).

One ``toolgym serve`` runs in a child process on a free 127.0.0.1 port (Docker backend,
``--warm-pool 2``, the default), so the load generator does not share its GIL. This process
drives it with one ``AsyncEnvClient`` and N workers (N = 8, 32, 64); each worker plays
episodes one after another, each = reset ``toolgym/ToolUse-v0`` (``tu-single-1``) + 3 steps
of one ``<tool_call>`` to a built-in tool (a sandbox run each) + close, until the run has
played ``max(N, --episodes)`` episodes. Reported: episodes/s and tool steps/s over the wall
time, and p50/p99 of reset, step and close as the client saw them.

A control run of FunctionCall-v0 (reset + 1 step + close; no sandbox) at the largest N shows
what the HTTP, episode and SQLite path sustain without containers.

Also: /healthz and /readyz latency under the load (a probe every 0.5 s); the CPU seconds the
client (this process), the server process, dockerd and containerd used per episode, and how
busy the whole host was (from ``/proc``); and a check, after each N and after the server
stopped, that no container of this server's instance is left (the warm pool's own idle ones
excepted while it runs). ``--control-only`` runs FunctionCall at every N instead; ``--shards 1,16`` repeats each run
with the N workers spread over that many ``AsyncEnvClient`` instances (connection pools).

Run: ``.venv/bin/python bench/throughput.py [--n 8,32,64] [--episodes 64]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from _common import (
    FUNCTIONCALL,
    FUNCTIONCALL_ACTION,
    FUNCTIONCALL_TASK,
    TOOL_ACTION,
    TOOLUSE,
    TOOLUSE_TASK,
    SubprocessServer,
    count_containers,
    docker_problem,
    ms,
    print_footer,
    print_header,
    summarize,
    table,
    wait_pool_full_http,
)

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _pids(name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == name:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _host_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def cpu_snapshot(server_pid: int) -> dict[str, float]:
    return {
        "client": _cpu_s(os.getpid()),
        "server": _cpu_s(server_pid),
        "dockerd": sum(_cpu_s(p) for p in _pids("dockerd")),
        "containerd": sum(_cpu_s(p) for p in _pids("containerd")),
        "host": _host_busy_s(),
    }


async def run_load(base_url: str, n: int, total: int, kind: str, tool_steps: int, shards: int = 1) -> dict[str, Any]:
    from toolgym.client import AsyncEnvClient

    lat: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    statuses: dict[str, int] = defaultdict(int)
    remaining = total

    async def one_episode(client: AsyncEnvClient) -> None:
        if kind == "tooluse":
            env, task, action, steps = TOOLUSE, TOOLUSE_TASK, TOOL_ACTION, tool_steps
        else:
            env, task, action, steps = FUNCTIONCALL, FUNCTIONCALL_TASK, FUNCTIONCALL_ACTION, 1
        t = time.perf_counter()
        reset = await client.reset(env, task, seed=0)
        lat["reset"].append(time.perf_counter() - t)
        for _ in range(steps):
            t = time.perf_counter()
            step = await client.step(reset.episode_id, action)
            lat["step"].append(time.perf_counter() - t)
            statuses[str(step.info.get("status"))] += 1
        t = time.perf_counter()
        await client.close(reset.episode_id)
        lat["close"].append(time.perf_counter() - t)

    async def worker(client: AsyncEnvClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await one_episode(client)
            except Exception as exc:  # counted and shown, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    import httpx

    async def prober(stop: asyncio.Event) -> None:
        """Every 0.5 s, /healthz (the event loop's responsiveness) and /readyz (which also asks
        Docker), on connections of their own, as a load balancer's probes would."""
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as probe:
            while not stop.is_set():
                for path in ("/healthz", "/readyz"):
                    t = time.perf_counter()
                    await probe.get(path)
                    lat[path].append(time.perf_counter() - t)
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass

    clients = [AsyncEnvClient(base_url, timeout_s=300.0, max_connections=max(64, 2 * n)) for _ in range(shards)]
    try:
        stop = asyncio.Event()
        probing = asyncio.create_task(prober(stop))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(clients[i % shards]) for i in range(n)))
        wall = time.perf_counter() - t0
        stop.set()
        await probing
    finally:
        for client in clients:
            await client.aclose()
    return {"lat": lat, "wall": wall, "errors": errors, "statuses": dict(statuses), "episodes": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="8,32,64", help="concurrent episodes (comma-separated)")
    parser.add_argument("--episodes", type=int, default=64, help="episodes per run at least (max(N, this))")
    parser.add_argument("--steps", type=int, default=3, help="tool steps per ToolUse episode")
    parser.add_argument("--warm-pool", type=int, default=2)
    parser.add_argument("--no-control", action="store_true", help="skip the FunctionCall control run")
    parser.add_argument("--control-only", action="store_true", help="only FunctionCall runs, at every N")
    parser.add_argument("--shards", default="1",
                        help="AsyncEnvClient instances the N workers are spread over (comma-separated: one run each)")
    args = parser.parse_args()
    why = docker_problem()
    if why is not None:
        print(f"throughput: skipped: {why}")
        return 0
    ns = [int(x) for x in args.n.split(",")]
    print_header("ToolGym throughput: N concurrent episodes against one server (Docker backend)", {
        "N": args.n, "episodes/run": f"max(N, {args.episodes})",
        "episode": f"reset + {args.steps} tool steps + close",
        "server": f"toolgym serve (child process), --warm-pool {args.warm_pool}",
        "client": f"AsyncEnvClient x {args.shards}, one process",
    })
    rows, cpu_rows, probe_rows, checks, problems = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        server = SubprocessServer("docker", tmp, "tput", warm_pool=args.warm_pool, max_live=max(256, max(ns)))
        print(f"server    {' '.join(server.cmd)}  (TOOLGYM_INSTANCE_ID={server.instance})")
        import httpx

        with server, httpx.Client(base_url=server.base_url, timeout=30) as http:
            assert server.proc is not None
            pid = server.proc.pid
            # Warm-up: a few episodes, untimed.
            asyncio.run(run_load(server.base_url, 2, 4, "tooluse", args.steps))
            shard_list = [int(x) for x in args.shards.split(",")]
            runs = [] if args.control_only else [("ToolUse", "tooluse", n, k) for n in ns for k in shard_list]
            if args.control_only:
                runs += [("FunctionCall (control)", "functioncall", n, k) for n in ns for k in shard_list]
            elif not args.no_control:
                runs += [("FunctionCall (control)", "functioncall", max(ns), k) for k in shard_list]
            for label, kind, n, shards in runs:
                if len(shard_list) > 1 or shards != 1:
                    label = f"{label} clients={shards}"
                wait_pool_full_http(http, args.warm_pool, timeout_s=120)
                total = max(n, args.episodes) if kind == "tooluse" else 4 * max(n, args.episodes)
                before = cpu_snapshot(pid)
                res = asyncio.run(run_load(server.base_url, n, total, kind, args.steps, shards))
                after = cpu_snapshot(pid)
                lat, wall = res["lat"], res["wall"]
                steps = len(lat["step"])
                done = len(lat["close"])
                r, s, c = summarize(lat["reset"]), summarize(lat["step"]), summarize(lat["close"])
                h, y = summarize(lat["/healthz"]), summarize(lat["/readyz"])
                probe_rows.append([f"{label} N={n}", str(len(lat["/healthz"])), ms(h["p50"]), ms(h["max"]),
                                   ms(y["p50"]), ms(y["max"])])
                rows.append([f"{label} N={n}", str(done), f"{wall:.1f}", f"{done / wall:.2f}", f"{steps / wall:.1f}",
                             ms(r["p50"]), ms(r["p99"]), ms(s["p50"]), ms(s["p99"]), ms(c["p50"]), ms(c["p99"]),
                             str(len(res["errors"]))])
                ours = sum(after[k] - before[k] for k in ("client", "server", "dockerd", "containerd"))
                cpu_rows.append([f"{label} N={n}"] + [f"{(after[k] - before[k]) / max(done, 1) * 1000:.1f}"
                                                      for k in ("client", "server", "dockerd", "containerd")]
                                + [f"{ours / wall * 100:.0f}%",
                                   f"{(after['host'] - before['host']) / wall * 100:.0f}%"])
                bad = {k: v for k, v in res["statuses"].items() if k != "ok"}
                if bad:
                    problems.append(f"{label} N={n}: step statuses {bad}")
                problems += [f"{label} N={n}: {e}" for e in res["errors"][:3]]
                # The run's episodes are all closed: only the warm pool's idle sandboxes may remain.
                wait_pool_full_http(http, args.warm_pool, timeout_s=120)
                open_eps = http.get("/readyz").json().get("open_episodes")  # once per run: Docker is asked twice
                left = count_containers(server.instance)
                checks.append(f"after {label} N={n}: {left} container(s) of the instance "
                              f"(= warm pool {args.warm_pool}: {'yes' if left == args.warm_pool else 'NO'}), "
                              f"open episodes {open_eps}")
        checks.append(f"after the server stopped (SIGTERM): {server.leftover_after_stop} container(s) of "
                      f"{server.instance} left")
    table(["run", "episodes", "wall s", "episodes/s", "steps/s", "reset p50", "reset p99", "step p50", "step p99",
           "close p50", "close p99", "errors"], rows, "Throughput (latencies in ms, as the client saw them)")
    table(["run", "client ms/ep", "server ms/ep", "dockerd ms/ep", "containerd ms/ep", "these 4 (of 200%)",
           "whole host busy"], cpu_rows,
          "CPU time per episode (user+system from /proc; dockerd/containerd serve other users of the engine too;"
          " runc, shims and sandboxes not counted)")
    table(["run", "probes", "/healthz p50", "/healthz max", "/readyz p50", "/readyz max"], probe_rows,
          "Probe latency during the run (ms; one probe client, every 0.5 s)")
    print("\nContainer checks:")
    for c in checks:
        print(f"  {c}")
    for p in problems:
        print(f"  PROBLEM: {p}")
    print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
