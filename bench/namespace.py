"""The namespace tier against its targets: fresh episodes/s, reset latency, 1,000 live episodes' memory.

One ``toolgym serve --backend docker`` with ``TOOLGYM_ISOLATION=namespace`` runs in a child
process on a free 127.0.0.1 port; this process drives it with one ``AsyncEnvClient``.

1. Docker floors, same run: the SDK's 1-thread create + start + remove rate
   (``_floors.sdk_rate``) and a cold ``docker run --rm`` (``_floors.cold_docker_run``).
2. Latency: ``--sequential`` episodes one at a time (reset, one tool call, close), each after
   the warm pool refilled and the teardown backlog drained (as ``episode_latency.py`` does):
   reset and step p50/p99. Target: reset p50 >= 30x faster than a cold ``docker run``.
3. Fresh episodes: ``--workers`` concurrent loops, each playing ToolUse episodes (reset
   ``tu-single-1``, one tool call = one sandbox run, close) for ``--seconds``; episodes/s, and
   the reset and step latency p50/p99 under that load. Target: episodes/s >= 15x the Docker
   1-thread create rate.
   With ``--compare`` (default on), phases 2 and 3 run against a container-tier server too, in
   the same run: on a loaded machine the ratio is what holds still.
4. ``--live`` episodes (1,000) opened from the same client, each with one tool call, all held
   open together; then the memory they cost: the host containers' cgroup memory (``docker
   stats``) and the machine's ``MemAvailable`` drop, against the 4 GiB target. With the
   comparison, ``--container-live`` (500) container-tier episodes are held the same way,
   against their 3 GiB target.

Run: ``.venv/bin/python bench/namespace.py [--workers 8] [--seconds 20] [--live 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    TOOL_ACTION,
    TOOLUSE,
    TOOLUSE_TASK,
    SubprocessServer,
    bench_instance,
    count_containers,
    docker_problem,
    ms,
    print_footer,
    print_header,
    remove_containers,
    summarize,
    table,
    wait_pool_full_http,
)
from _floors import cold_docker_run, sdk_rate

GiB = 1024**3


def mem_available() -> int:
    """The machine's MemAvailable in bytes."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _cgroup_memory(container_id: str) -> int | None:
    """A container's memory use without page cache, read from its cgroup (v1 or v2); None if not found.

    ``docker stats`` takes about 2 s a container (it waits for two samples), too slow for 500; the
    cgroup files give the same figure at once.
    """
    v1 = Path("/sys/fs/cgroup/memory/docker") / container_id
    if (v1 / "memory.usage_in_bytes").exists():
        usage = int((v1 / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (v1 / "memory.stat").read_text().splitlines())
        return usage - int(stat.get("total_cache", stat.get("cache", 0)))
    scope = Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope")
    for v2 in (scope, Path("/sys/fs/cgroup/docker") / container_id):
        if (v2 / "memory.current").exists():
            usage = int((v2 / "memory.current").read_text())
            stat = dict(line.split() for line in (v2 / "memory.stat").read_text().splitlines())
            return usage - int(stat.get("file", 0))
    return None


def host_container_memory(instance: str) -> tuple[int, int]:
    """(containers, their summed memory use without page cache, in bytes) for one server instance."""
    from toolgym.server.sandbox.docker import docker_client

    client = docker_client(timeout_s=120)
    try:
        found = client.api.containers(filters={"label": ["toolgym.managed=1", f"toolgym.instance={instance}"]})
        total = 0
        for c in found:
            used = _cgroup_memory(c["Id"])
            if used is None:
                memory = client.api.stats(c["Id"], stream=False).get("memory_stats", {})
                used = int(memory.get("usage", 0)) - int(memory.get("stats", {}).get("cache", 0))
            total += used
        return len(found), total
    finally:
        client.close()


async def churn(base_url: str, workers: int, seconds: float) -> dict[str, Any]:
    from toolgym.client import AsyncEnvClient

    resets: list[float] = []
    steps: list[float] = []
    done = 0
    deadline = time.monotonic() + seconds
    async with AsyncEnvClient(base_url, timeout_s=300.0) as client:
        async def loop() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                reset = await client.reset(TOOLUSE, TOOLUSE_TASK, seed=0)
                t1 = time.perf_counter()
                step = await client.step(reset.episode_id, TOOL_ACTION)
                t2 = time.perf_counter()
                assert step.info.get("status") == "ok", step.info
                await client.close(reset.episode_id)
                resets.append(t1 - t0)
                steps.append(t2 - t1)
                done += 1

        t = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(workers)))
        wall = time.perf_counter() - t
    return {"episodes": done, "wall_s": wall, "per_s": done / wall, "reset": resets, "step": steps}


async def sequential(base_url: str, n: int, warm_pool: int) -> dict[str, Any]:
    import httpx

    from toolgym.client import AsyncEnvClient

    resets: list[float] = []
    steps: list[float] = []
    with httpx.Client(base_url=base_url, timeout=60.0) as probe:
        async with AsyncEnvClient(base_url, timeout_s=300.0) as client:
            for _ in range(n):
                wait_pool_full_http(probe, warm_pool)
                t0 = time.perf_counter()
                reset = await client.reset(TOOLUSE, TOOLUSE_TASK, seed=0)
                t1 = time.perf_counter()
                await client.step(reset.episode_id, TOOL_ACTION)
                steps.append(time.perf_counter() - t1)
                resets.append(t1 - t0)
                await client.close(reset.episode_id)
    return {"reset": resets, "step": steps}


async def live(base_url: str, n: int, instance: str) -> dict[str, Any]:
    from toolgym.client import AsyncEnvClient

    before = mem_available()
    ids: list[str] = []
    failed = 0
    sem = asyncio.Semaphore(32)
    async with AsyncEnvClient(base_url, timeout_s=600.0) as client:
        async def open_one() -> None:
            nonlocal failed
            async with sem:
                try:
                    reset = await client.reset(TOOLUSE, TOOLUSE_TASK, seed=0)
                    step = await client.step(reset.episode_id, TOOL_ACTION)
                    assert step.info.get("status") == "ok", step.info
                    ids.append(reset.episode_id)
                except Exception:
                    failed += 1

        t = time.perf_counter()
        await asyncio.gather(*(open_one() for _ in range(n)))
        opened_s = time.perf_counter() - t
        await asyncio.sleep(2.0)
        hosts, cgroup = host_container_memory(instance)
        after = mem_available()
        served = 0
        for i in range(0, len(ids), 64):  # every live episode answers a second call
            results = await asyncio.gather(*(client.step(e, TOOL_ACTION) for e in ids[i:i + 64]),
                                           return_exceptions=True)
            served += sum(1 for r in results if not isinstance(r, BaseException))
        await asyncio.gather(*(client.close(e) for e in ids), return_exceptions=True)
    return {"live": len(ids), "failed": failed, "served_again": served, "open_s": opened_s, "hosts": hosts,
            "cgroup": cgroup, "available_drop": before - after}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--live", type=int, default=1000)
    p.add_argument("--sequential", type=int, default=40)
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="skip the container tier's latency and churn in the same run")
    p.add_argument("--floor-containers", type=int, default=12)
    p.add_argument("--container-live", type=int, default=500,
                   help="with the comparison: live container-tier episodes held at once for their memory"
                        " (target < 3 GiB for 500; 0 skips)")
    args = p.parse_args()
    problem = docker_problem()
    if problem:
        print(f"namespace bench skipped: {problem}")
        return 0
    print_header("namespace tier", vars(args))
    floor_instance = bench_instance("ns-floor")
    try:
        rate = sdk_rate(floor_instance, 1, args.floor_containers)
        cold = cold_docker_run(floor_instance, 5)
    finally:
        remove_containers(floor_instance)
    cold_p50 = summarize(cold)["p50"]
    with tempfile.TemporaryDirectory() as tmp:
        server = SubprocessServer("docker", tmp, "ns", warm_pool=8, max_live=args.live + 64,
                                  extra_env={"TOOLGYM_ISOLATION": "namespace", "TOOLGYM_WARM_POOL_MAX": "64",
                                             "TOOLGYM_WORKER_THREADS": "128"})
        with server:
            sq = asyncio.run(sequential(server.base_url, args.sequential, 8))
            ch = asyncio.run(churn(server.base_url, args.workers, args.seconds))
            lv = asyncio.run(live(server.base_url, args.live, server.instance)) if args.live else None
        leftover = server.leftover_after_stop + count_containers(server.instance)
        csq: dict[str, Any] | None = None
        cch: dict[str, Any] | None = None
        clv: dict[str, Any] | None = None
        if args.compare:
            container = SubprocessServer("docker", tmp, "ct", warm_pool=8, max_live=max(256, args.container_live + 64),
                                         extra_env={"TOOLGYM_WARM_POOL_MAX": "64", "TOOLGYM_WORKER_THREADS": "128"})
            with container:
                csq = asyncio.run(sequential(container.base_url, args.sequential, 8))
                cch = asyncio.run(churn(container.base_url, args.workers, args.seconds))
                if args.container_live:
                    clv = asyncio.run(live(container.base_url, args.container_live, container.instance))
            leftover += container.leftover_after_stop + count_containers(container.instance)
    reset, step = summarize(sq["reset"]), summarize(sq["step"])
    loaded, loaded_step = summarize(ch["reset"]), summarize(ch["step"])
    table(["measure", "value", "target", "met"], [
        ["docker SDK create+start+remove, 1 thread", f"{rate['per_s']:.1f}/s", "", ""],
        ["cold docker run p50", ms(cold_p50), "", ""],
        [f"fresh episodes/s ({args.workers} workers)", f"{ch['per_s']:.1f}/s", f">= {15 * rate['per_s']:.0f}/s",
         "yes" if ch["per_s"] >= 15 * rate["per_s"] else "no"],
        [f"reset p50 / p99 (one at a time, {args.sequential})", f"{ms(reset['p50'])} / {ms(reset['p99'])}",
         f"p50 <= {ms(cold_p50 / 30)}", "yes" if reset["p50"] * 30 <= cold_p50 else "no"],
        ["step p50 / p99 (one at a time)", f"{ms(step['p50'])} / {ms(step['p99'])}", "", ""],
        [f"reset p50 / p99 ({args.workers} workers)", f"{ms(loaded['p50'])} / {ms(loaded['p99'])}", "", ""],
        [f"step p50 / p99 ({args.workers} workers)", f"{ms(loaded_step['p50'])} / {ms(loaded_step['p99'])}", "", ""],
    ], title="namespace tier")
    if csq is not None and cch is not None:
        c_reset, c_step, c_loaded = summarize(csq["reset"]), summarize(csq["step"]), summarize(cch["reset"])
        table(["measure", "container tier", "namespace tier", "namespace / container"], [
            ["reset p50 (one at a time)", ms(c_reset["p50"]), ms(reset["p50"]),
             f"{reset['p50'] / c_reset['p50']:.2f}x"],
            ["step p50 (one at a time)", ms(c_step["p50"]), ms(step["p50"]), f"{step['p50'] / c_step['p50']:.2f}x"],
            [f"fresh episodes/s ({args.workers} workers)", f"{cch['per_s']:.1f}/s", f"{ch['per_s']:.1f}/s",
             f"{ch['per_s'] / cch['per_s']:.1f}x"],
            [f"reset p50 ({args.workers} workers)", ms(c_loaded["p50"]), ms(loaded["p50"]),
             f"{loaded['p50'] / c_loaded['p50']:.2f}x"],
        ], title="same run, container tier")
    for tier, got, wanted, cap in (("namespace", lv, args.live, 4), ("container", clv, args.container_live, 3)):
        if got is None:
            continue
        table(["measure", "value", "target", "met"], [
            ["live episodes (failed)", f"{got['live']} ({got['failed']})", f"{wanted}",
             "yes" if got["live"] == wanted else "no"],
            ["served a second call", str(got["served_again"]), f"{got['live']}",
             "yes" if got["served_again"] == got["live"] else "no"],
            ["opened in", f"{got['open_s']:.1f} s", "", ""],
            ["containers", str(got["hosts"]), "", ""],
            ["containers' memory (cgroup, no cache)", f"{got['cgroup'] / GiB:.2f} GiB", f"< {cap} GiB",
             "yes" if got["cgroup"] < cap * GiB else "no"],
            ["machine MemAvailable drop", f"{got['available_drop'] / GiB:.2f} GiB", f"< {cap} GiB",
             "yes" if got["available_drop"] < cap * GiB else "no"],
        ], title=f"{wanted} live {tier}-tier episodes from one AsyncEnvClient")
    print(f"containers left behind: {leftover}")
    print_footer()
    return 0 if leftover == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
