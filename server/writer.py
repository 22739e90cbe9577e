"""The store's one writer thread, with group commit.

Steps of many episodes arrive at once; committing each in its own transaction costs one
fsync apiece (``synchronous=FULL``) and, run on the event loop, stalls every other request
for it. Here the event loop only queues an operation (``Store.step_op`` ...) and awaits its
future; one thread takes everything queued since its last commit, runs it in one transaction
(``Store.commit_group``) and commits once, then wakes each waiter with its own outcome. Under
load a commit carries many steps; alone, a step waits for one commit, as before.

"Acknowledged = on disk" holds: a waiter is woken only after the commit that holds its
write has returned, and the HTTP answer is sent only after that. A group the store
refuses for want of a working disk reaches each of its waiters as ``StoreUnavailable`` (503,
retryable; ``Store.commit_group``); the thread goes on, and the next commit succeeds once the
disk does.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolgym.errors import ShuttingDown
from toolgym.server.store import Outcome, Store, WriteOp

__all__ = ["StoreWriter"]

log = logging.getLogger(__name__)

MAX_GROUP = 512
"""At most this many operations in one transaction (bounds one commit's duration)."""


@dataclass
class _Pending:
    op: WriteOp
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], outcome: Outcome) -> None:
    if future.done():  # its request was cancelled; the write is committed all the same
        return
    if outcome.error is not None:
        future.set_exception(outcome.error)
    else:
        future.set_result(outcome.value)


class StoreWriter:
    """Serializes the episode writes of one ``Store`` on one thread, committing in groups.

    Args:
        store: the store whose writer connection this thread uses.
        on_commit: called on the writer thread after each commit with the number of
            operations it held and the seconds it took (metrics).
    """

    def __init__(self, store: Store, on_commit: Callable[[int, float], None] | None = None) -> None:
        self._store = store
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        self.writes = 0

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="toolgym-store-writer", daemon=True)
            self._thread.start()

    @property
    def backlog(self) -> int:
        """Operations queued and not yet taken by the thread."""
        return self._queue.qsize()

    async def write(self, op: WriteOp) -> Any:
        """Queue ``op`` and return its value once the transaction holding it has committed.

        Its own error (e.g. a duplicate turn) is raised here and undoes only ``op``.

        Raises:
            StoreUnavailable: the database could not write (disk full, I/O error, connection lost):
                nothing of ``op`` is on disk, and the caller must not act as if it were.
        """
        if self._closed or self._thread is None:
            raise ShuttingDown("the store writer is stopped", retry_after_s=5.0)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Pending(op, loop, future))
        return await future

    def stop(self, timeout_s: float = 30.0) -> None:
        """Refuse new writes, commit everything already queued, and end the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=timeout_s)
            if self._thread.is_alive():
                log.error("the store writer did not finish within %.0f s", timeout_s)
                return
        # A write queued behind the stop sentinel (it passed the check as stop began) is
        # committed here rather than left waiting forever.
        late: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                late.append(item)
        if late:
            self._commit(late)

    def _take(self) -> tuple[list[_Pending], bool]:
        """Block for one operation, then take whatever else is queued (up to ``MAX_GROUP``).

        Returns the group and whether the stop sentinel was seen.
        """
        first = self._queue.get()
        if first is None:
            return [], True
        group = [first]
        while len(group) < MAX_GROUP:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return group, True
            group.append(item)
        return group, False

    def _run(self) -> None:
        """The thread: take a group, commit it, wake its waiters; until the stop sentinel."""
        stopping = False
        while not stopping:
            group, stopping = self._take()
            if group:
                self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        """Commit one group and wake each waiter with its own outcome."""
        started = time.perf_counter()
        try:
            outcomes = self._store.commit_group([p.op for p in group])
        except Exception as exc:  # the commit failed: nothing of this group is on disk
            log.exception("group commit of %d writes failed", len(group))
            outcomes = [Outcome(error=exc)] * len(group)
        self.commits += 1
        self.writes += len(group)
        if self._on_commit is not None:
            self._on_commit(len(group), time.perf_counter() - started)
        for pending, outcome in zip(group, outcomes, strict=True):
            try:
                pending.loop.call_soon_threadsafe(_settle, pending.future, outcome)
            except RuntimeError:  # its event loop is closed: nobody is waiting any more
                pass
