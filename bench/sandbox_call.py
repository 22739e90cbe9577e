"""The Docker sandbox itself, below HTTP: one call on the persistent stream vs ``docker exec``,
the two channels of that stream, container creation rate, and host memory per idle sandbox.

Uses ``toolgym.server.sandbox.docker.DockerBackend`` directly (the server's own code), with
its hardened containers and labels (``toolgym.managed=1``, ``toolgym.instance=bench-...``).

0. Channels (``DockerBackend(channel=...)``): one container on Docker's attach relay and one on
   the direct unix socket, the same agent in both; ``ping`` and a small ``run`` (call ``f(x=1)``),
   interleaved in rounds. Beside each latency, the host CPU per call of dockerd, containerd and
   that container's containerd-shim (utime + stime from ``/proc/<pid>/stat`` over the block),
   and of this process (the server's side). Then (0b) sandboxes created on each channel in turn,
   one thread, with the first run in each: the channels' creation cost under the same noise.
1. Call latency, in one container, interleaved in rounds so both see the same noise:
   - ``ping``: one JSON line each way to the agent, nothing run;
   - ``run (call)``: ``sandbox.run`` of a tiny function (``def f(x): return x + 1``, called
     with ``x=1``) - the agent forks a fresh, rlimited child, which is what a ToolUse step runs;
   - ``run (code)``: ``sandbox.run`` of the same code as a script that prints ``f(1)``;
   - ``docker exec python3``: the docker SDK's ``exec_run`` of that script in the same
     container, as the same user: what a per-call ``docker exec`` design would pay;
   - ``docker exec true``: ``exec_run(["true"])``, the exec machinery without Python.
2. Creation rate: ``DockerBackend.create`` (create, attach, start, wait for the agent's hello)
   of ``--create`` sandboxes from 1, 2 and 4 threads; sandboxes/s over the wall time. Then their
   removal (``sandbox.close``: ``docker rm -f``), one after another.
3. Memory per idle sandbox (``--idle`` of them, agent started, nothing run): the container's
   cgroup memory (Docker's stats API), the agent's and its containerd-shim's RSS and PSS from
   ``/proc`` on the host, and the growth of dockerd's and containerd's RSS, per sandbox.

Run: ``.venv/bin/python bench/sandbox_call.py [--calls 200] [--execs 40] [--create 12] [--idle 10]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import (
    IMAGE,
    LATENCY_HEADERS,
    bench_instance,
    count_containers,
    docker_problem,
    latency_row,
    ms,
    print_footer,
    print_header,
    ratio,
    summarize,
    table,
)

FUNC = "def f(x):\n    return x + 1\n"
SCRIPT = FUNC + "print(f(1))\n"


def spec(tag: str) -> Any:
    from toolgym.server.sandbox.base import SandboxSpec
    from toolgym.server.sandbox.pool import LABEL_EPISODE, LABEL_OWNER

    return SandboxSpec(labels={LABEL_EPISODE: f"bench-{tag}-{uuid.uuid4().hex[:8]}", LABEL_OWNER: "bench"})


# --- 0. channels ------------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """utime + stime of one host process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def channel_creates(backends: dict[str, Any], creates: int) -> None:
    """``create`` + first run + ``close`` on each channel in turn (alternating which goes first)."""
    from toolgym.envs.runner import RunLimits, RunRequest

    req = RunRequest(code="print(1)", limits=RunLimits(timeout_s=10))
    made: dict[str, list[float]] = {name: [] for name in backends}
    first: dict[str, list[float]] = {name: [] for name in backends}
    for i in range(creates):
        order = list(backends.items())
        for name, backend in order if i % 2 else order[::-1]:
            t = time.perf_counter()
            box = backend.create(spec(f"chanc-{name}"))
            made[name].append(time.perf_counter() - t)
            try:
                t = time.perf_counter()
                assert box.run(req).stdout == "1\n"
                first[name].append(time.perf_counter() - t)
            finally:
                box.close()
    table(LATENCY_HEADERS, [
        *(latency_row(f"{name} create (create, start, connect/attach, hello)", made[name]) for name in backends),
        *(latency_row(f"{name} first run in a new sandbox", first[name]) for name in backends),
    ], "0b. Creation per channel, interleaved (one thread)")


def channel_compare(backends: dict[str, Any], client: Any, calls: int, rounds: int = 10) -> None:
    from toolgym.envs.runner import FunctionCall, RunLimits, RunRequest

    req = RunRequest(code=FUNC, call=FunctionCall("f", {"x": 1}), limits=RunLimits(timeout_s=10))
    daemons = _pids_by_name("dockerd", "containerd")
    boxes = {name: b.create(spec(f"chan-{name}")) for name, b in backends.items()}
    try:
        shims = {name: _shim_of(client.containers.get(box.id).id) for name, box in boxes.items()}
        lat: dict[str, list[float]] = {f"{n} {k}": [] for n in boxes for k in ("ping", "run")}
        cpu: dict[str, list[float]] = {f"{n} {k}": [0.0, 0.0, 0.0, 0.0] for n in boxes for k in ("ping", "run")}
        for box in boxes.values():  # warm-up: the agent's first forks
            for _ in range(5):
                box.ping()
                box.run(req)
        per_round = max(1, calls // rounds)
        for _ in range(rounds):
            for name, box in boxes.items():
                for kind in ("ping", "run"):
                    shim = shims[name]
                    d0 = sum(_cpu_s(p) for p in daemons)
                    s0 = _cpu_s(shim) if shim else 0.0
                    me0 = sum(os.times()[:2])
                    t0 = time.perf_counter()
                    for _ in range(per_round):
                        t = time.perf_counter()
                        if kind == "ping":
                            box.ping()
                        else:
                            assert box.run(req).value == "2"
                        lat[f"{name} {kind}"].append(time.perf_counter() - t)
                    acc = cpu[f"{name} {kind}"]
                    acc[0] += sum(_cpu_s(p) for p in daemons) - d0
                    acc[1] += (_cpu_s(shim) if shim else 0.0) - s0
                    acc[2] += sum(os.times()[:2]) - me0
                    acc[3] += time.perf_counter() - t0
    finally:
        for box in boxes.values():
            box.close()
    rows = []
    for key, samples in lat.items():
        d, sh, me, _ = cpu[key]
        n = len(samples)
        rows.append(latency_row(key, samples, ms(d / n), ms(sh / n), ms((d + sh) / n), ms(me / n)))
    table([*LATENCY_HEADERS, "dockerd+containerd ms/call", "shim ms/call", "engine total", "this process"],
          rows, "0. The agent's channel: attach relay vs direct unix socket (interleaved rounds; CPU from /proc)")
    p50 = {k: summarize(v)["p50"] for k, v in lat.items()}
    if "attach ping" in p50 and "socket ping" in p50:
        table(["attach - socket (same run, p50)", "ms saved", "ratio"], [
            [kind, ms(p50[f"attach {kind}"] - p50[f"socket {kind}"]),
             ratio(p50[f"attach {kind}"], p50[f"socket {kind}"])] for kind in ("ping", "run")
        ])


# --- 1. call latency ---------------------------------------------------------------------------------
def call_latency(backend: Any, client: Any, calls: int, execs: int, rounds: int = 10) -> None:
    from toolgym.envs.runner import FunctionCall, RunLimits, RunRequest

    box = backend.create(spec("call"))
    try:
        container = client.containers.get(box.id)
        call_req = RunRequest(code=FUNC, call=FunctionCall("f", {"x": 1}), limits=RunLimits(timeout_s=10))
        code_req = RunRequest(code=SCRIPT, limits=RunLimits(timeout_s=10))
        exec_kw = {"user": "65534:65534", "workdir": "/work", "environment": {"PATH": "/usr/bin:/bin"}}
        # Warm-up: the agent's first fork, the exec path's first use.
        for _ in range(5):
            box.ping()
            assert box.run(call_req).value == "2"
            assert box.run(code_req).stdout.strip() == "2"
        code, out = container.exec_run(["python3", "-I", "-c", SCRIPT], **exec_kw)
        assert code == 0 and out.strip() == b"2", (code, out)
        s: dict[str, list[float]] = {k: [] for k in ("ping", "call", "code", "exec_py", "exec_true",
                                                      "agent_call", "agent_code")}
        per_round, exec_round = max(1, calls // rounds), max(1, execs // rounds)
        for _ in range(rounds):
            for _ in range(per_round):
                t = time.perf_counter()
                box.ping()
                s["ping"].append(time.perf_counter() - t)
            for _ in range(per_round):
                t = time.perf_counter()
                r = box.run(call_req)
                s["call"].append(time.perf_counter() - t)
                s["agent_call"].append(r.duration_s)
                assert r.value == "2", r
            for _ in range(per_round):
                t = time.perf_counter()
                r = box.run(code_req)
                s["code"].append(time.perf_counter() - t)
                s["agent_code"].append(r.duration_s)
                assert r.stdout.strip() == "2", r
            for _ in range(exec_round):
                t = time.perf_counter()
                code, out = container.exec_run(["python3", "-I", "-c", SCRIPT], **exec_kw)
                s["exec_py"].append(time.perf_counter() - t)
                assert code == 0 and out.strip() == b"2", (code, out)
            for _ in range(exec_round):
                t = time.perf_counter()
                code, _ = container.exec_run(["true"], **exec_kw)
                s["exec_true"].append(time.perf_counter() - t)
                assert code == 0
    finally:
        box.close()
    table(LATENCY_HEADERS, [
        latency_row("agent ping (protocol round trip)", s["ping"]),
        latency_row("sandbox.run: call f(x=1) (fresh child)", s["call"]),
        latency_row("  of which inside the agent (fork..reap)", s["agent_call"]),
        latency_row("sandbox.run: script print(f(1))", s["code"]),
        latency_row("  of which inside the agent (fork..reap)", s["agent_code"]),
        latency_row("docker exec python3 -c script", s["exec_py"]),
        latency_row("docker exec true", s["exec_true"]),
    ], "1. One call in one container (interleaved rounds)")
    p50 = {k: summarize(v)["p50"] for k, v in s.items()}
    table(["ratio (same run, p50)", "values", "ratio"], [
        ["docker exec python3 / sandbox.run call", f"{ms(p50['exec_py'])} / {ms(p50['call'])} ms",
         ratio(p50["exec_py"], p50["call"])],
        ["docker exec python3 / sandbox.run script", f"{ms(p50['exec_py'])} / {ms(p50['code'])} ms",
         ratio(p50["exec_py"], p50["code"])],
        ["docker exec true / agent ping", f"{ms(p50['exec_true'])} / {ms(p50['ping'])} ms",
         ratio(p50["exec_true"], p50["ping"])],
    ])


# --- 2. creation rate ----------------------------------------------------------------------------------
class _TimedContainer:
    """A docker SDK container whose ``attach_socket`` and ``start`` are timed."""

    def __init__(self, real: Any, marks: dict[str, list[float]]) -> None:
        self._real, self._marks = real, marks

    def attach_socket(self, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return self._real.attach_socket(*a, **kw)
        finally:
            self._marks["attach"].append(time.perf_counter() - t)

    def start(self, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return self._real.start(*a, **kw)
        finally:
            self._marks["start"].append(time.perf_counter() - t)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _TimedContainers:
    def __init__(self, real: Any, marks: dict[str, list[float]]) -> None:
        self._real, self._marks = real, marks

    def create(self, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        container = self._real.create(*a, **kw)
        self._marks["create"].append(time.perf_counter() - t)
        return _TimedContainer(container, self._marks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class TimedClient:
    """A docker SDK client for ``DockerBackend(client=...)`` that times the API calls of
    ``create`` (the backend's code is unchanged; only its client is wrapped)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.marks: dict[str, list[float]] = {"create": [], "attach": [], "start": []}
        self.containers = _TimedContainers(real.containers, self.marks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def creation_rate(backend: Any, timed_client: TimedClient, count: int, threads_list: list[int]) -> None:
    rows = []
    breakdown: list[list[str]] = []
    for threads in threads_list:
        boxes: list[Any] = []
        latencies: list[float] = []
        for v in timed_client.marks.values():
            v.clear()

        def make(_: int, tag: str = f"rate{threads}", latencies: list[float] = latencies) -> Any:
            t = time.perf_counter()
            box = backend.create(spec(tag))
            latencies.append(time.perf_counter() - t)
            return box

        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(threads) as ex:
                for box in ex.map(make, range(count)):
                    boxes.append(box)
            wall = time.perf_counter() - t0
        finally:
            removals = []
            for box in boxes:
                t = time.perf_counter()
                box.close()
                removals.append(time.perf_counter() - t)
        s, r = summarize(latencies), summarize(removals)
        rows.append([f"{threads} thread(s)", str(count), f"{wall:.2f}", f"{count / wall:.2f}", ms(s["p50"]),
                     ms(s["p90"]), ms(r["p50"]), f"{1 / r['p50']:.1f}" if r["p50"] else "-"])
        m = {k: summarize(v)["p50"] if v else 0.0 for k, v in timed_client.marks.items()}
        hello = s["p50"] - m["create"] - m["attach"] - m["start"]
        breakdown.append([f"{threads} thread(s)", ms(m["create"]), ms(m["attach"]), ms(m["start"]), ms(hello),
                          ms(s["p50"])])
    table(["create", "n", "wall s", "sandboxes/s", "create p50 ms", "create p90 ms", "rm p50 ms", "rm/s (1 thread)"],
          rows, "2. Creation rate (DockerBackend.create: create + attach + start + agent hello)")
    table(["create (p50 ms)", "POST create", "attach", "start", "agent hello (rest)", "total"], breakdown,
          "   where a create goes (docker API calls timed through a wrapped client)")


# --- 3. memory per idle sandbox ---------------------------------------------------------------------------
def _proc_mem(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one host process."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def _pids_by_name(*names: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() in names:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _shim_of(container_id: str) -> int | None:
    for pid in _pids_by_name("containerd-shim", "containerd-shim-runc-v2"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if container_id.encode() in fh.read():
                    return pid
        except OSError:
            continue
    return None


def _mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_per_sandbox(backend: Any, client: Any, count: int) -> None:
    daemons = _pids_by_name("dockerd", "containerd")
    before = sum(_proc_mem(p)[0] for p in daemons)
    avail_before = _mem_available()
    boxes = [backend.create(spec("idle")) for _ in range(count)]
    try:
        time.sleep(2.0)
        after = sum(_proc_mem(p)[0] for p in daemons)
        avail_after = _mem_available()
        cg_usage, cg_rss, agent_rss, agent_pss, shim_rss, shim_pss = [], [], [], [], [], []
        for box in boxes:
            c = client.containers.get(box.id)
            st = c.stats(stream=False)["memory_stats"]
            inner = st.get("stats", {})
            cg_usage.append(st.get("usage", 0))
            # cgroup v1: rss (anonymous); v2: anon. Both without the page cache.
            cg_rss.append(inner.get("rss", inner.get("anon", 0)))
            pid = c.attrs["State"]["Pid"]
            r, p = _proc_mem(pid)
            agent_rss.append(r)
            agent_pss.append(p)
            shim = _shim_of(c.id)
            r, p = _proc_mem(shim) if shim else (0, 0)
            shim_rss.append(r)
            shim_pss.append(p)
    finally:
        for box in boxes:
            box.close()

    def mib(x: float) -> str:
        return f"{x / 2**20:.1f}"

    med = statistics.median
    daemon_delta = (after - before) / count
    total = med(agent_pss) + med(shim_pss) + max(daemon_delta, 0)
    table(["per idle sandbox", f"MiB (median of {count})"], [
        ["container cgroup memory usage (incl. page cache)", mib(med(cg_usage))],
        ["container cgroup rss / anon (no page cache)", mib(med(cg_rss))],
        ["agent process RSS (host /proc)", mib(med(agent_rss))],
        ["agent process PSS (shared pages split)", mib(med(agent_pss))],
        ["containerd-shim RSS", mib(med(shim_rss))],
        ["containerd-shim PSS", mib(med(shim_pss))],
        ["dockerd + containerd RSS growth / sandbox", mib(daemon_delta)],
        ["host estimate: agent PSS + shim PSS + daemons", mib(total)],
        ["MemAvailable drop / sandbox (noisy: whole host)", mib((avail_before - avail_after) / count)],
    ], "3. Host memory per idle sandbox")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="sandbox.run calls of each kind")
    parser.add_argument("--execs", type=int, default=40, help="docker exec calls of each kind")
    parser.add_argument("--create", type=int, default=12, help="sandboxes created per thread count")
    parser.add_argument("--threads", default="1,2,4")
    parser.add_argument("--idle", type=int, default=10, help="idle sandboxes for the memory figure")
    parser.add_argument("--channels", default="attach,socket", help="channels compared in 0. and 2.")
    parser.add_argument("--channel-calls", type=int, default=400, help="calls of each kind per channel in 0.")
    parser.add_argument("--channel-creates", type=int, default=12, help="sandboxes per channel in 0b.")
    args = parser.parse_args()
    why = docker_problem()
    if why is not None:
        print(f"sandbox_call: skipped: {why}")
        return 0
    from toolgym.server.sandbox.docker import DockerBackend, docker_client

    instance = bench_instance("sandbox")
    print_header("Docker sandbox: persistent-stream call vs docker exec, creation rate, idle memory", {
        "calls": args.calls, "execs": args.execs, "create": args.create, "threads": args.threads,
        "idle": args.idle, "image": IMAGE, "instance": instance,
    })
    client = docker_client()
    timed_client = TimedClient(docker_client())
    backend = DockerBackend(image=IMAGE, instance=instance, client=timed_client)
    print(f"default channel here: {backend.channel}")
    channels = {name: DockerBackend(image=IMAGE, instance=instance, client=timed_client, channel=name)
                for name in args.channels.split(",") if name}
    try:
        channel_compare(channels, client, args.channel_calls)
        channel_creates(channels, args.channel_creates)
        call_latency(backend, client, args.calls, args.execs)
        for name, chosen in channels.items():
            print(f"\nchannel: {name}")
            creation_rate(chosen, timed_client, args.create, [int(t) for t in args.threads.split(",")])
        memory_per_sandbox(backend, client, args.idle)
    finally:
        removed = backend.remove_owned(instance)
        left = count_containers(instance)
        backend.close()
        client.close()
        print(f"\ncontainers left behind: {left} (removed at the end: {removed};"
              f" found by label toolgym.instance={instance})")
        print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
