"""py-spy around a phase of ``bench/peers.py``: a flame graph (SVG) and collapsed stacks of the
server process while the load runs, and the top frames of those stacks as text.

py-spy samples the server's PID from outside (``--nonblocking``: the process is not paused
per sample), so the server runs unchanged; it stops on SIGINT, sent to its own PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Recording:
    """Three py-spy samplers on one PID for the span of a ``with``: ``<out_dir>/<name>.svg``,
    the flame graph of the samples that hold the GIL (where the server's Python CPU goes), and
    in ``raw_dir`` (large; not kept) ``<name>-cpu.txt``, the same samples as collapsed stacks,
    and ``<name>-wall.txt``, every thread's stacks, idle ones included (where a request waits)."""

    def __init__(self, pid: int, out_dir: str, raw_dir: str, name: str, rate: int = 100) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.svg = os.path.join(out_dir, f"{name}.svg")
        self.cpu = os.path.join(raw_dir, f"{name}-cpu.txt")
        self.wall = os.path.join(raw_dir, f"{name}-wall.txt")
        base = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking"]
        self.cmds = [[*base, "--gil", "--format", "flamegraph", "-o", self.svg],
                     [*base, "--gil", "--format", "raw", "-o", self.cpu],
                     [*base, "--idle", "--format", "raw", "-o", self.wall]]
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Recording:
        self.procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in self.cmds]
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def _short(frame: str) -> str:
    """``fn (path/to/file.py:12)`` -> ``fn (file-ish path:12)``, trimmed to the package part."""
    for marker in ("site-packages/", "/server/", "/envs/", "/client/", "/toolgym/", "python3.11/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            path = tail.split(marker, 1)[1] if marker in tail else tail
            prefix = {"/server/": "server/", "/envs/": "envs/", "/client/": "client/", "/toolgym/": "toolgym/"}
            return f"{head.strip()} ({prefix.get(marker, '')}{path.rstrip(')')})"
    return frame


def top_frames(raw_path: str, n: int = 15) -> tuple[int, list[tuple[str, float, float]]]:
    """From py-spy's collapsed stacks: total samples, and the ``n`` frames with the largest
    inclusive share, each with (frame, inclusive %, self %)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        total += k
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        for f in set(frames):
            inclusive[f] += k
        if frames:
            own[frames[-1]] += k
    if not total:
        return 0, []
    rows = [(f, 100.0 * c / total, 100.0 * own[f] / total) for f, c in inclusive.most_common()
            if not any(g in f for g in _GENERIC)]
    return total, [(_short(f), inc, slf) for f, inc, slf in rows[:n]]


_GENERIC = ("threading.py", "asyncio/runners.py", "asyncio/base_events.py", "uvicorn/main.py", "uvicorn/server.py",
            "uvicorn/_compat.py", "_serve.py", "<module>", "concurrent/futures/thread.py", "WorkerThread.run")
"""Frames that every sample of a thread passes through (entry points, the loop's run): they say nothing."""


def top_self(raw_path: str, n: int = 10) -> list[tuple[str, float]]:
    """The ``n`` frames where most samples end (self time)."""
    own: Counter[str] = Counter()
    total = 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        own[stack.split(";")[-1]] += int(count)
    return [(_short(f), 100.0 * c / total) for f, c in own.most_common(n)] if total else []


CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("sandbox I/O (agent protocol, attach socket)", ("agent_client.py", "sandbox/docker.py:", "sandbox/pool.py")),
    ("Docker SDK (requests, urllib3, http.client)", ("docker/api", "requests/", "urllib3/")),
    ("SQLite store", ("server/store.py",)),
    ("env logic (parse, verify, observation)", ("/envs/",)),
    ("worker-thread handoff (anyio, threading, queue)", ("anyio/", "threading.py", "queue.py")),
    ("HTTP parsing (uvicorn h11/httptools)", ("h11", "httptools_impl")),
    ("FastAPI/Starlette/pydantic request path", ("fastapi/", "starlette/", "pydantic")),
    ("JSON encode/decode", ("json/",)),
    ("event loop (asyncio select, callbacks)", ("asyncio/", "selectors.py")),
]
"""Each sample goes to the FIRST category (in this order) one of its frames matches, from the
leaf up: so a sample blocked in the sandbox read counts as sandbox I/O even inside a request."""


def categories(raw_path: str) -> tuple[int, list[tuple[str, float]]]:
    """Share of samples per ``CATEGORIES`` entry (leaf-most matching frame wins)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        label = "other"
        if "Queue.get (queue.py" in stack:  # a worker thread with nothing to do
            counts["idle worker threads (waiting for work)"] += int(count)
            continue
        for frame in reversed(stack.split(";")):
            hit = next((name for name, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if hit:
                label = hit
                break
        counts[label] += int(count)
    return total, [(k, 100.0 * v / total) for k, v in counts.most_common()] if total else []


def summary(raw_path: str, n: int = 15) -> str:
    """Top frames of one collapsed-stacks file as text (inclusive and self %)."""
    total, rows = top_frames(raw_path, n)
    lines = [f"{Path(raw_path).name}: {total} samples", "by category (leaf-most matching frame):"]
    lines += [f"{v:5.1f}  {k}" for k, v in categories(raw_path)[1]]
    lines += ["", "incl%  self%  frame"]
    lines += [f"{inc:5.1f}  {slf:5.1f}  {f}" for f, inc, slf in rows]
    lines += ["", "self% (where samples end)"] + [f"{v:5.1f}  {f}" for f, v in top_self(raw_path, n)]
    return "\n".join(lines)


def write_summaries(out_dir: str, raw_dir: str, names: list[str]) -> None:
    """``<out_dir>/<name>-top.txt``: the categories and top frames of its CPU and wall stacks."""
    for name in names:
        parts = [summary(os.path.join(raw_dir, f"{name}-{kind}.txt")) for kind in ("cpu", "wall")
                 if os.path.exists(os.path.join(raw_dir, f"{name}-{kind}.txt"))]
        Path(out_dir, f"{name}-top.txt").write_text("\n\n".join(parts) + "\n")
