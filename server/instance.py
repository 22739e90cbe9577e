"""Who owns which sandboxes: one lock file per live server instance, and the start-up sweep.

Containers carry their server's instance id (label ``toolgym.instance``). Removing another
server's containers would kill its warm pool and its live episodes, so a server removes only
what is provably orphaned:

- A live server holds an exclusive ``flock`` on ``<instance_dir>/<instance>.lock`` from
  start-up (before it touches any container) to shutdown. The kernel drops the lock when the
  process dies, however it dies (``kill -9`` included), so a lock that can be taken belongs to
  no live process.
- At start-up a server takes its own instance's lock; if another live server holds it the
  start-up fails (``Conflict``) having touched nothing. Holding it, it removes its own id's
  leftovers (a restart with a fixed ``instance_id``).
- It then tries every other lock file in the directory: each one it can lock is an instance
  whose server is gone, and that instance's containers are removed, then its file. A lock it
  cannot take is a live server, left alone. Containers of instances with no lock file here
  (another host's, or a tool such as the task generator that runs its own backend) are not
  provably orphaned and are never touched.

Default instance ids are unique per process (``Settings.instance``), so two servers never
share one unless told to. The lock is per host: servers on several hosts sharing one Docker
engine must use distinct fixed ids, or the default ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from toolgym.errors import Conflict
from toolgym.server.sandbox.base import SandboxBackend
from toolgym.server.settings import Settings

__all__ = ["InstanceLock", "claim_instance", "default_instance_dir", "sweep_orphans"]

log = logging.getLogger("toolgym.server")

OUTLIVES_SERVER = frozenset({"docker"})
"""Backends whose sandboxes survive their server's process (a process sandbox dies with it)."""


def default_instance_dir() -> Path:
    """``toolgym-<uid>/instances`` in the system temp dir: per user, shared by that user's servers."""
    return Path(tempfile.gettempdir()) / f"toolgym-{os.getuid()}" / "instances"


def _file_name(instance: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", instance)[:200] + ".lock"


def _try_lock(path: Path) -> IO[str] | None:
    """The open, exclusively locked file at ``path``, or None if a live process holds it.

    Also None if the file was replaced while we waited (it is then someone else's, just made).
    """
    handle = open(path, "a+", encoding="utf-8")  # kept open while locked
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    try:
        same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # unlinked by a sweeper between our open and our lock
        handle.close()
        return None
    return handle


def _read_info(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


class InstanceLock:
    """The lock a live server holds on its instance id (see the module doc)."""

    def __init__(self, instance: str, directory: Path) -> None:
        self.instance = instance
        self.directory = directory
        self.path = directory / _file_name(instance)
        self._handle: IO[str] | None = None

    def acquire(self, backend: str, port: int, wait_s: float = 2.0) -> None:
        """Take the lock, or raise ``Conflict`` naming the live server that holds it.

        Waits up to ``wait_s`` first: another server's sweep briefly holds the lock of a dead
        predecessor with the same id.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        deadline = time.monotonic() + wait_s
        while True:
            handle = _try_lock(self.path)
            if handle is not None:
                break
            if time.monotonic() >= deadline:
                raise Conflict(self._held_message(), instance=self.instance)
            time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        json.dump({"instance": self.instance, "pid": os.getpid(), "host": socket.gethostname(), "port": port,
                   "backend": backend, "started": time.time()}, handle)
        handle.flush()
        self._handle = handle

    def _held_message(self) -> str:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        who = f" (pid {holder.get('pid')}, port {holder.get('port')})" if isinstance(holder, dict) else ""
        return (f"instance {self.instance!r} is in use by a live server{who}: give this server another "
                f"instance_id, or leave it unset for a unique one")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent).

        Called after the server's own sandboxes are removed, so a sweeper never races a clean
        shutdown.
        """
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        handle.close()


def sweep_orphans(backend: SandboxBackend, own: InstanceLock) -> int:
    """Remove the sandboxes of every instance in ``own.directory`` whose lock is free.

    Only for backends whose sandboxes outlive their server; for the others it removes nothing.

    Returns:
        How many sandboxes were removed.
    """
    if backend.name not in OUTLIVES_SERVER:
        return 0
    removed = 0
    for path in sorted(own.directory.glob("*.lock")):
        if path == own.path:
            continue
        handle = _try_lock(path)
        if handle is None:
            continue  # a live server (or one that just started)
        try:
            info = _read_info(handle)
            instance, owner_backend = info.get("instance"), info.get("backend")
            if owner_backend not in (None, backend.name) and owner_backend in OUTLIVES_SERVER:
                continue  # another engine's kind of sandbox: leave it for a server that can reach it
            if isinstance(instance, str) and instance:
                count = backend.remove_owned(instance)
                if count:
                    log.info("removed %d sandboxes of instance %s (pid %s), whose server is gone",
                             count, instance, info.get("pid"))
                removed += count
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            handle.close()
    return removed


def claim_instance(backend: SandboxBackend, settings: Settings) -> InstanceLock:
    """Start-up, before any container is made: take this instance's lock, then clean up.

    Having the lock, it removes this instance's own leftovers, then every orphan's (see the
    module doc). If the clean-up fails, the lock is released before the error propagates.

    Raises:
        Conflict: a live server holds this instance's lock.
    """
    directory = Path(settings.instance_dir) if settings.instance_dir else default_instance_dir()
    lock = InstanceLock(settings.instance, directory)
    lock.acquire(backend.name, settings.port)
    try:
        removed = backend.remove_owned(settings.instance)
        if removed:
            log.info("removed %d sandboxes left by a previous run of instance %s", removed, settings.instance)
        sweep_orphans(backend, lock)
    except BaseException:
        lock.release()
        raise
    return lock
