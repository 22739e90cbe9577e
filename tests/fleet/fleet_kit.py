"""Pieces of the fleet tests: our Ray nodes' processes, and a running fleet as the tests see it.

The cluster is two ``ray start`` nodes (a head with the custom resource ``node0``, a second
node joined with ``--address`` and ``node1``), each with its own ``--temp-dir``, one CPU, a
small object store and no dashboard. It is stopped by ending exactly the processes it started:
every process whose command line names one of its temp dirs, and their descendants (the
actors' workers). ``ray stop`` is never called: it ends every Ray process of the user,
another test run's included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

RAY = str(Path(sys.executable).with_name("ray"))
TOOLGYM = str(Path(sys.executable).with_name("toolgym"))
START_TIMEOUT_S = 90.0
RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (ppid, cmdline)
    return table


def cluster_pids(markers: list[str]) -> set[int]:
    """The processes of our Ray nodes: those naming one of ``markers`` (our temp dirs) and their descendants."""
    table = _processes()
    found = {pid for pid, (_, cmd) in table.items() if any(m in cmd for m in markers)}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        grew = bool(children)
        found |= children
    found.discard(os.getpid())
    return found


def end_processes(pids: set[int], grace_s: float = 3.0) -> None:
    """SIGTERM ``pids``, then SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


@dataclass
class RayCluster:
    """The address a driver joins with, and the temp dirs that name our nodes' processes."""

    address: str
    temp_dirs: list[str]


@dataclass
class Fleet:
    """A running ``toolgym serve --ray``: its entry point, its process and where it logs."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def version(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base_url}/v1/version", timeout=10.0)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def replicas(self) -> list[dict[str, Any]]:
        return self.version()["replicas"]  # type: ignore[no-any-return]
