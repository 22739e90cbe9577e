"""One small ToolUse tool call inside the sandbox, and a turn of parallel calls.

Measures, on each backend (``process`` and, where an engine and the image exist, ``docker``):

1. ``run`` of a small FTRL-style tool (``import json, re, math``; one function called with one
   argument): the agent's own ``duration_s`` (fork of the run's process to its reap, what the
   sandbox adds) and the round trip seen by ``Sandbox.run``;
2. a turn of two calls that each sleep 0.5 s: sequential ``run`` against ``run_many`` (the
   agent runs a batch's calls at once), where the sandbox has ``run_many``.

``--gap-ms`` waits that long between calls (a comma-separated list runs the calls once per gap),
as a policy's generation or the server's HTTP work does between two steps: the agent forks its
next standby child only once it is idle after a reply, so the gap decides whether a call finds
one ready.

Per call it also reports the host CPU of the agent and of its children (run and standby
processes, counted when reaped: ``utime+stime+cutime+cstime`` of the agent in ``/proc``) and the
children's minor page faults (``cminflt``), the copy-on-write cost of each fork.

Run: ``.venv/bin/python bench/zygote_call.py [--calls 300] [--gap-ms 0,1.5,5] [--backends process,docker]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

TOOL = '''import json
import re
import math


def lookup_city(name):
    """A small tool as FTRL's generated ones look: parse, compute, return a dict."""
    key = re.sub(r"\\s+", " ", name.strip().lower())
    return {"city": key, "population": int(math.sqrt(len(key)) * 1000), "raw": json.dumps(name)}
'''
SLEEP = "import time\n\ndef nap(s):\n    time.sleep(s)\n    return 'rested'\n"


def make_backend(name: str) -> Any:
    """The server's own backend class, or None when it cannot run here."""
    if name == "process":
        from toolgym.server.sandbox.process import ProcessBackend

        return ProcessBackend()
    from toolgym.server.sandbox.select import docker_problem

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _common import IMAGE

    if docker_problem(IMAGE):
        return None
    from toolgym.server.sandbox.docker import DockerBackend

    return DockerBackend(image=IMAGE, instance=f"bench-{uuid.uuid4().hex[:8]}")


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` in milliseconds."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def agent_pid(name: str, box: Any) -> int | None:
    """The host pid of the sandbox's agent: the hello's pid, or the container's pid 1 for Docker."""
    if name == "process":
        return int(box.hello["pid"])
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", box.id], capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def cpu_and_faults(pid: int | None) -> tuple[float, int]:
    """CPU seconds of ``pid`` and its reaped children, and those children's minor faults."""
    if pid is None:
        return 0.0, 0
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): cminflt is field 11, utime..cstime fields 14-17.
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK"), int(fields[8])


def bench(name: str, calls: int, gaps_s: list[float]) -> None:
    """Both measurements on one backend; prints one block."""
    from toolgym.envs.runner import FunctionCall, RunLimits, RunRequest
    from toolgym.server.sandbox.base import SandboxSpec
    from toolgym.server.sandbox.pool import LABEL_EPISODE, LABEL_OWNER

    backend = make_backend(name)
    if backend is None:
        print(f"[{name}] skipped: no engine or image")
        return
    box = backend.create(SandboxSpec(labels={LABEL_EPISODE: f"bench-{uuid.uuid4().hex[:8]}", LABEL_OWNER: "bench"}))
    try:
        req = RunRequest(code=TOOL, call=FunctionCall("lookup_city", {"name": " New  York "}),
                         limits=RunLimits(timeout_s=10))
        for _ in range(10):
            assert box.run(req).status == "ok"
        pid = agent_pid(name, box)
        for gap_s in gaps_s:
            inside: list[float] = []
            trip: list[float] = []
            cpu0, faults0 = cpu_and_faults(pid)
            for _ in range(calls):
                time.sleep(gap_s)
                t = time.perf_counter()
                r = box.run(req)
                trip.append(time.perf_counter() - t)
                inside.append(r.duration_s)
                assert r.status == "ok", r
            cpu1, faults1 = cpu_and_faults(pid)
            print(f"[{name}] tool call x{calls} gap {1000 * gap_s:g} ms: inside the agent p50 {pct(inside, .5):.3f} ms"
                  f" p90 {pct(inside, .9):.3f} ms; Sandbox.run round trip p50 {pct(trip, .5):.3f} ms"
                  f" p90 {pct(trip, .9):.3f} ms (mean {1000 * statistics.mean(trip):.3f} ms);"
                  f" agent+children CPU {1000 * (cpu1 - cpu0) / calls:.2f} ms/call,"
                  f" child minor faults {(faults1 - faults0) / calls:.0f}/call")
        nap = RunRequest(code=SLEEP, call=FunctionCall("nap", {"s": 0.5}), limits=RunLimits(timeout_s=5))
        t = time.perf_counter()
        seq = [box.run(nap) for _ in range(2)]
        seq_s = time.perf_counter() - t
        line = f"[{name}] two 0.5 s calls: sequential {seq_s:.3f} s"
        if hasattr(box, "run_many"):
            t = time.perf_counter()
            par = box.run_many([nap, nap])
            par_s = time.perf_counter() - t
            assert [r.value for r in par] == [r.value for r in seq] == ["rested", "rested"]
            line += f", run_many {par_s:.3f} s"
        print(line)
    finally:
        box.close()
        backend.close()


def main() -> None:
    """Parse the flags and run the bench on each backend asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--gap-ms", default="0", help="pause between two calls; a comma-separated list")
    parser.add_argument("--backends", default="process,docker")
    args = parser.parse_args()
    for name in args.backends.split(","):
        bench(name, args.calls, [float(g) / 1000 for g in args.gap_ms.split(",")])


if __name__ == "__main__":
    main()
