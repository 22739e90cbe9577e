"""What uvloop, httptools and orjson responses would buy ToolGym's server, in one run.

Five servers run side by side, each the same app (``create_app``) started by the harness's
launcher ``bench/_serve.py`` in a child process on 127.0.0.1 (Docker backend, warm pool 1),
differing only in uvicorn's event loop and HTTP parser and in how JSON answers are encoded:

    asyncio + h11 (uvicorn's pure-Python default, what the peers' servers used here)
    uvloop + h11 | asyncio + httptools | uvloop + httptools | uvloop + httptools + orjson

The variants are measured in turn, ``--rounds`` times (so each sees the same machine load):
FunctionCall step latency (one ``httpx.Client``, sequential; no sandbox: the HTTP, episode and
SQLite path alone), tool-call step latency (one run in the episode's container), and
FunctionCall episodes (reset + step + close) from 32 workers over 4 ``AsyncEnvClient``s, with
the server's CPU time per episode read from ``/proc`` (the figure the least sensitive to the
other users of the machine). Ratios are against asyncio + h11 in the same run.

Run: ``.venv/bin/python bench/server_options.py [--rounds 2] [--steps 200] [--episodes 384]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict

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
)
from throughput import _cpu_s

VARIANTS: dict[str, list[str]] = {
    "asyncio + h11": ["--loop", "asyncio", "--http", "h11"],
    "uvloop + h11": ["--loop", "uvloop", "--http", "h11"],
    "asyncio + httptools": ["--loop", "asyncio", "--http", "httptools"],
    "uvloop + httptools": ["--loop", "uvloop", "--http", "httptools"],
    "uvloop + httptools + orjson": ["--loop", "uvloop", "--http", "httptools", "--orjson"],
}


def fc_steps(base_url: str, steps: int) -> list[float]:
    out: list[float] = []
    with httpx.Client(base_url=base_url, timeout=60) as c:
        for i in range(steps + 5):
            r = c.post("/v1/episodes", json={"env_id": FUNCTIONCALL, "task_id": FUNCTIONCALL_TASK, "seed": 0})
            eid = r.json()["episode_id"]
            t = time.perf_counter()
            r = c.post(f"/v1/episodes/{eid}/step", json={"action": FUNCTIONCALL_ACTION})
            dt = time.perf_counter() - t
            r.raise_for_status()
            c.delete(f"/v1/episodes/{eid}")
            if i >= 5:
                out.append(dt)
    return out


async def fc_load(base_url: str, workers: int, episodes: int, pools: int = 4) -> float:
    from toolgym.client import AsyncEnvClient

    clients = [AsyncEnvClient(base_url, timeout_s=300.0, max_connections=16) for _ in range(pools)]
    remaining = episodes

    async def worker(client: AsyncEnvClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            r = await client.reset(FUNCTIONCALL, FUNCTIONCALL_TASK, seed=0)
            await client.step(r.episode_id, FUNCTIONCALL_ACTION)
            await client.close(r.episode_id)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(clients[i % pools]) for i in range(workers)))
        return time.perf_counter() - t0
    finally:
        for c in clients:
            await c.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="sequential steps per variant and round")
    parser.add_argument("--episodes", type=int, default=384, help="FunctionCall episodes per variant and round")
    args = parser.parse_args()
    why = docker_problem()
    if why is not None:
        print(f"server_options: skipped: {why}")
        return 0
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("uvicorn", "uvloop", "httptools", "orjson", "fastapi"))
    print_header("ToolGym server: uvicorn event loop, HTTP parser and JSON encoder, one run",
                 {"rounds": args.rounds, "steps": args.steps, "episodes": args.episodes, "versions": versions})
    samples: dict[str, dict[str, list[float]]] = {v: defaultdict(list) for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        servers = {v: SubprocessServer("docker", tmp, f"opt{i}", warm_pool=1, uvicorn=opts)
                   for i, (v, opts) in enumerate(VARIANTS.items())}
        try:
            for s in servers.values():
                s.start()
            for s in servers.values():  # warm-up, untimed
                fc_steps(s.base_url, 10)
                asyncio.run(fc_load(s.base_url, 8, 32))
            for _ in range(args.rounds):
                for v, s in servers.items():
                    assert s.proc is not None
                    samples[v]["fc step"] += fc_steps(s.base_url, args.steps)
                    samples[v]["tool step"] += tg.sequential_tool_steps(s.base_url, args.steps // 2)
                    cpu0 = _cpu_s(s.proc.pid)
                    wall = asyncio.run(fc_load(s.base_url, 32, args.episodes))
                    samples[v]["eps/s"].append(args.episodes / wall)
                    samples[v]["server cpu ms/ep"].append((_cpu_s(s.proc.pid) - cpu0) / args.episodes * 1000)
        finally:
            leftovers = []
            for s in servers.values():
                s.stop()
                if s.leftover_after_stop:
                    leftovers.append(f"{s.instance}: {s.leftover_after_stop}")
    base = samples["asyncio + h11"]

    def med(xs: list[float]) -> float:
        return summarize(xs)["p50"]

    rows: list[list[str]] = []
    for v, smp in samples.items():
        fc, tool = med(smp["fc step"]), med(smp["tool step"])
        eps, cpu = med(smp["eps/s"]), med(smp["server cpu ms/ep"])
        rows.append([v, ms(fc), ms(summarize(smp["fc step"])["p99"]), f"{med(base['fc step']) / fc:.2f}x",
                     ms(tool), f"{med(base['tool step']) / tool:.2f}x", f"{eps:.0f}",
                     f"{eps / med(base['eps/s']):.2f}x", f"{cpu:.2f}", f"{med(base['server cpu ms/ep']) / cpu:.2f}x"])
    table(["variant", "FC step p50", "p99", "speed-up", "tool step p50", "speed-up", "FC eps/s", "ratio",
           "server CPU ms/ep", "CPU saving"], rows,
          f"Per variant (ms; medians over {args.rounds} rounds; ratios: asyncio + h11 / variant, >1 is better)")
    print("\ncontainers left behind: " + ("; ".join(leftovers) if leftovers else "none (checked by label)"))
    print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
