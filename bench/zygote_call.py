"""One small ToolUse tool call inside the sandbox, and a turn of parallel calls.

Measures, on each backend (``process`` and, where an engine and the image exist, ``docker``):

1. ``run`` of a small FTRL-style tool (``import json, re, math``; one function called with one
   argument): the agent's own ``duration_s`` (fork of the run's process to its reap, what the
   sandbox adds) and the round trip seen by ``Sandbox.run``;
2. a turn of two calls that each sleep 0.5 s: sequential ``run`` against ``run_many`` (the
   agent runs a batch's calls at once), where the sandbox has ``run_many``.

``--gap-ms`` waits that long between calls, as a policy's generation does between two turns:
the agent forks its next standby child after each reply, so back-to-back calls (the default,
0) also pay for that fork, and calls with a gap do not.

Run: ``.venv/bin/python bench/zygote_call.py [--calls 300] [--gap-ms 0] [--backends process,docker]``
"""

from __future__ import annotations

import argparse
import statistics
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


def bench(name: str, calls: int, gap_s: float = 0.0) -> None:
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
        inside: list[float] = []
        trip: list[float] = []
        for _ in range(calls):
            time.sleep(gap_s)
            t = time.perf_counter()
            r = box.run(req)
            trip.append(time.perf_counter() - t)
            inside.append(r.duration_s)
            assert r.status == "ok", r
        print(f"[{name}] tool call x{calls} gap {1000 * gap_s:g} ms: inside the agent p50 {pct(inside, .5):.3f} ms"
              f" p90 {pct(inside, .9):.3f} ms; Sandbox.run round trip p50 {pct(trip, .5):.3f} ms"
              f" p90 {pct(trip, .9):.3f} ms (mean {1000 * statistics.mean(trip):.3f} ms)")
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
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause between two calls")
    parser.add_argument("--backends", default="process,docker")
    args = parser.parse_args()
    for name in args.backends.split(","):
        bench(name, args.calls, args.gap_ms / 1000)


if __name__ == "__main__":
    main()
