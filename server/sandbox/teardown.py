"""Sandbox removal in the background, off the request path.

Removing a Docker container takes 60-100 ms idle and most of a second under churn; an
episode's last step and its DELETE used to wait for it. Now they hand the sandbox to this
worker and answer at once: the episode is over in the store and in the manager the moment
the request ends; only the container lingers, for the time the worker needs.

Bounded on both sides: ``workers`` threads remove sandboxes in parallel (Docker's removal
rate, not our thread count, is the real limit on 2 cores), and at most ``capacity`` wait in
the queue. When the queue is full, ``submit`` refuses and the caller removes the sandbox
itself: removals then slow the requests that cause them (back-pressure) instead of piling up.

Never leaks: ``drain`` (on shutdown) removes everything queued before it returns; a process
killed mid-teardown leaves containers that carry its instance label, and the start-up sweep
(``SandboxBackend.remove_owned``) removes them on the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from toolgym.server.sandbox.base import Sandbox

__all__ = ["Teardown", "TeardownStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeardownStatus:
    """The teardown backlog, for ``/readyz`` and ``/metrics``.

    Attributes:
        backlog: sandboxes waiting or being removed (containers that still exist although
            their episode is over).
        workers: removal threads.
        capacity: queue bound; a full queue makes callers remove sandboxes themselves.
        removed: sandboxes removed so far by the workers.
        failed: removals that raised (the start-up sweep takes those containers).
    """

    backlog: int
    workers: int
    capacity: int
    removed: int
    failed: int


class Teardown:
    """A bounded queue of sandboxes to remove and a few threads removing them."""

    def __init__(self, *, workers: int = 2, capacity: int = 256) -> None:
        self._workers = workers
        self._capacity = capacity
        self._queue: queue.Queue[Sandbox | None] = queue.Queue(maxsize=capacity)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._pending = 0
        self._accepting = True
        self.removed = 0
        self.failed = 0

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        if self._threads:
            return
        for i in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"toolgym-teardown-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, sandbox: Sandbox) -> bool:
        """Queue ``sandbox`` for removal; never blocks.

        Returns False when it was not taken (the queue is full, or the worker is stopped): the
        caller must then remove it itself.
        """
        if not self._accepting or not self._threads:
            return False
        with self._lock:
            self._pending += 1  # counted before a worker can take it, so ``backlog`` never dips
        try:
            self._queue.put_nowait(sandbox)
        except queue.Full:
            with self._lock:
                self._pending -= 1
            return False
        return True

    @property
    def backlog(self) -> int:
        """Sandboxes queued or being removed."""
        with self._lock:
            return self._pending

    def status(self) -> TeardownStatus:
        """A snapshot of the backlog and counters."""
        return TeardownStatus(backlog=self.backlog, workers=self._workers, capacity=self._capacity,
                              removed=self.removed, failed=self.failed)

    def _run(self) -> None:
        while True:
            sandbox = self._queue.get()
            if sandbox is None:
                return
            self._remove(sandbox)

    def _remove(self, sandbox: Sandbox) -> None:
        try:
            sandbox.close()
            self.removed += 1
        except Exception:  # the start-up sweep removes it by label; this worker goes on
            self.failed += 1
            log.exception("removing sandbox %s failed", getattr(sandbox, "id", "?"))
        finally:
            with self._lock:
                self._pending -= 1

    def drain(self, timeout_s: float = 60.0) -> int:
        """Stop taking sandboxes, remove everything queued, end the threads.

        Whatever the workers could not finish in ``timeout_s`` is removed here, on the caller's
        thread. Returns how many sandboxes were removed by this call itself.
        """
        self._accepting = False
        deadline = time.monotonic() + timeout_s
        for _ in self._threads:
            self._queue.put(None)  # after every queued sandbox: FIFO
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        left = 0
        while True:
            try:
                sandbox = self._queue.get_nowait()
            except queue.Empty:
                break
            if sandbox is not None:
                self._remove(sandbox)
                left += 1
        return left
