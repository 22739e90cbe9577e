"""The ``process`` backend: each sandbox is a local agent process. NOT isolated.

This is the embedded fallback for a machine without a Docker engine, so a laptop still runs
ToolGym. It gives resource limits, not isolation: the code can read the host's files that the
sandbox user can read. The server logs that loudly at startup.

Run as root, it does what it can without a container runtime:
- every sandbox gets its own unprivileged uid (from ``uid_base``), so the kernel's
  ``RLIMIT_NPROC`` bounds that sandbox alone (the kernel does not apply it to root, and a fork
  bomb from a root process reaches the host), and the agent can end every leftover process
  of the sandbox with ``kill(-1)`` without touching anything else;
- the agent starts in a fresh network namespace (``unshare --net``): no network.
Run as an ordinary user, code runs as that user, with rlimits and a process group only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import IO

from toolgym.errors import SandboxError
from toolgym.server.sandbox.agent_client import AGENT_SOURCE, AgentSandbox, Channel
from toolgym.server.sandbox.base import Sandbox, SandboxSpec

__all__ = ["ProcessBackend"]

log = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
UID_LOCK_DIR = os.path.join(tempfile.gettempdir(), "toolgym-sandbox-uids")


class _PipeChannel(Channel):
    def __init__(self, proc: subprocess.Popen[bytes], stderr_file: IO[bytes]) -> None:
        self._proc = proc
        self._stderr = stderr_file
        assert proc.stdin is not None and proc.stdout is not None
        self._stdin = proc.stdin
        self._stdout_fd = proc.stdout.fileno()

    def send(self, data: bytes) -> None:
        self._stdin.write(data)
        self._stdin.flush()

    def read_chunk(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self._stdout_fd], [], [], max(0.0, timeout_s))
        if not ready:
            raise TimeoutError
        return os.read(self._stdout_fd, 1 << 20)

    def close(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def diagnostics(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-4000:].decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""


@dataclass
class _Live:
    proc: subprocess.Popen[bytes]
    slot: int | None
    uid: int | None
    workdir: str
    stderr: IO[bytes]


def _pids_of_uid(uid: int, *, zombies: bool = True) -> list[int]:
    """Processes of ``uid``, zombies included unless ``zombies`` is False.

    Zombies count by default because they still hold their uid's process slots; pass
    ``zombies=False`` to list what can still be killed (a zombie is already dead).
    """
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                if not zombies:
                    with open(f"/proc/{entry}/stat", "rb") as fh:
                        if fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                            continue
                pids.append(int(entry))
            except (OSError, IndexError):
                continue
    return pids


def _claim_uid(uid: int) -> int | None:
    """Lock ``uid`` for this process (released on close or exit), or None if another holds it."""
    os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(UID_LOCK_DIR, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class ProcessBackend:
    """Sandboxes as local processes (see the module doc for what that does and does not give)."""

    name = "process"
    isolated = False

    def __init__(self, *, uid_base: int = 1_700_000, max_sandboxes: int = 4096,
                 start_timeout_s: float = 10.0) -> None:
        self._as_root = os.geteuid() == 0
        self._uid_base = uid_base
        self._free_slots = deque(range(max_sandboxes))
        self._slot_locks: dict[int, int] = {}
        self._slot_lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._start_timeout_s = start_timeout_s
        self._unshare = shutil.which("unshare") if self._as_root else None
        self._python = SYSTEM_PYTHON if self._as_root and os.path.exists(SYSTEM_PYTHON) else sys.executable

    def check(self) -> None:
        """Raise ``SandboxError`` if the Python the agent would run under is missing.

        As root that is the system ``/usr/bin/python3`` (so the sandbox uid can read it), else
        this process's own interpreter.
        """
        if not os.path.exists(self._python):
            raise SandboxError(f"process backend: no Python at {self._python}")

    def _take_slot(self) -> int | None:
        """A uid slot for one sandbox, and only for it; None when not root (no uid of its own).

        Other backends on this host (another server, a test run) draw from the same range: a
        uid is ours while we hold its lock file, and is skipped while any process still has it
        (another user's sandbox, or killed ones not yet reaped, which count against
        RLIMIT_NPROC).
        """
        if not self._as_root:
            return None
        with self._slot_lock:
            for _ in range(len(self._free_slots)):
                slot = self._free_slots.popleft()
                uid = self._uid_base + slot
                fd = _claim_uid(uid)
                if fd is not None and not _pids_of_uid(uid):
                    self._slot_locks[slot] = fd
                    return slot
                if fd is not None:
                    os.close(fd)
                self._free_slots.append(slot)
            raise SandboxError("process backend: no free sandbox uid; raise max_sandboxes")

    def _give_slot(self, slot: int | None) -> None:
        if slot is not None:
            with self._slot_lock:
                fd = self._slot_locks.pop(slot, None)
                if fd is not None:
                    os.close(fd)
                self._free_slots.append(slot)  # last in line: its dead processes get time to be reaped

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Start an agent process for ``spec`` and wait until it answers.

        Of ``spec`` only ``max_processes`` is used, and only as root (the ``RLIMIT_NPROC``
        ceiling of the sandbox's own uid): its labels and its sandbox-wide memory, CPU and
        work-dir caps need a container. Each run's own limits are still applied by the agent.

        Raises:
            SandboxError: no free uid, or the agent could not be started or did not answer.
        """
        slot = self._take_slot()
        workdir = tempfile.mkdtemp(prefix="toolgym-sandbox-")
        sandbox_id = "proc-" + uuid.uuid4().hex[:12]
        args = [self._python, "-u", "-I", "-c", AGENT_SOURCE, "--workdir", workdir]
        uid = None
        if slot is not None:
            uid = self._uid_base + slot
            os.chown(workdir, uid, uid)
            os.chmod(workdir, 0o700)
            args += ["--kill-all", "--nproc", str(spec.max_processes)]
            if self._unshare:
                args = [self._unshare, "--net", f"--setgid={uid}", f"--setuid={uid}", "--", *args]
        stderr_file = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                cwd=workdir,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,
                close_fds=True,
                user=uid if (uid is not None and not self._unshare) else None,
                group=uid if (uid is not None and not self._unshare) else None,
                extra_groups=[] if (uid is not None and not self._unshare) else None,
            )
        except OSError as exc:
            self._give_slot(slot)
            shutil.rmtree(workdir, ignore_errors=True)
            raise SandboxError(f"process backend could not start the agent: {exc}") from exc
        self._live[sandbox_id] = _Live(proc, slot, uid, workdir, stderr_file)
        return AgentSandbox.start(
            sandbox_id, _PipeChannel(proc, stderr_file), lambda: self._destroy(sandbox_id), self._start_timeout_s
        )

    def _destroy(self, sandbox_id: str) -> bool:
        entry = self._live.pop(sandbox_id, None)
        if entry is None:
            return False
        proc, uid = entry.proc, entry.uid
        alive = proc.poll() is None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(timeout=5)  # reap the agent now: a zombie would look like a live process below
        except subprocess.TimeoutExpired:
            log.warning("process sandbox %s did not exit after SIGKILL", sandbox_id)
        if uid is not None:
            for _ in range(50):
                pids = _pids_of_uid(uid, zombies=False)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                time.sleep(0.005)
        entry.stderr.close()
        shutil.rmtree(entry.workdir, ignore_errors=True)
        self._give_slot(entry.slot)
        return alive

    def remove_owned(self, instance: str | None = None) -> int:
        """End the sandboxes this backend object still holds; ``instance`` is ignored.

        Process sandboxes die with their server (the agent exits when its stdin closes), so
        there is never another instance's leftover to remove.
        """
        return sum(1 for sandbox_id in list(self._live) if self._destroy(sandbox_id))

    def close(self) -> None:
        """End every sandbox still live: this backend's only resources are its processes."""
        self.remove_owned()
