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
    """Two py-spy samplers on one PID for the span of a ``with``: one writes the SVG, the other
    the collapsed stacks that ``top_frames`` reads."""

    def __init__(self, pid: int, out_dir: str, name: str, rate: int = 100) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.svg = os.path.join(out_dir, f"{name}.svg")
        self.raw = os.path.join(out_dir, f"{name}.txt")
        base = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking"]
        self.cmds = [[*base, "--format", "flamegraph", "-o", self.svg], [*base, "--format", "raw", "-o", self.raw]]
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
    # Frames present in (nearly) every sample (the thread's entry, the event loop's run) say nothing.
    rows = [(f, 100.0 * c / total, 100.0 * own[f] / total) for f, c in inclusive.most_common() if c < 0.97 * total]
    return total, [(_short(f), inc, slf) for f, inc, slf in rows[:n]]


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
