"""The SQLite store: one file (the default ``db_path``), embedded, for the servers of one machine.

Two connections: one writer, guarded by the store's lock (SQLite serializes writers anyway),
and one reader, so a read never waits behind a write (WAL mode: readers see the last commit
while a write is under way). ``synchronous=FULL``: a commit that has returned is on disk, not
only in the OS cache, so "acknowledged" survives a power cut as well as a crash.

A replica's liveness lock is a file lock: ``<db>-replicas/<replica>.lock`` beside the database,
held with ``flock`` from ``register_replica`` to ``close``. The kernel drops it when the process
dies, however it dies, so several servers on one machine may share a file (the Ray fleet's
shared ``--db`` does) and none takes another live one's episodes, as on PostgreSQL. Servers on
other machines cannot see each other's locks (nor share a SQLite file safely): several
replicas on several hosts share a PostgreSQL database (``toolgym.server.store_pg``). An
in-memory database (``:memory:``) is one process's alone: only its own replica is alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
from pathlib import Path
from typing import IO, ClassVar

from toolgym.errors import StoreUnavailable
from toolgym.server.store import MIGRATIONS, SCHEMA, Store, Tx

__all__ = ["SqliteStore", "disk_fault"]

_DISK_FAULTS = frozenset({5, 6, 8, 10, 13, 14})
"""SQLite's primary result codes for the disk or the file failing, not the SQL: BUSY, LOCKED,
READONLY, IOERR, FULL, CANTOPEN (sqlite.org/rescode.html)."""
_DISK_FAULT_WORDS = ("disk is full", "disk i/o error", "database is locked", "readonly database",
                     "unable to open database")
"""The same faults by message, where ``sqlite_errorcode`` is missing (Python before 3.11)."""


def _lock_name(replica: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", replica)[:200] + ".lock"


def _held(path: Path) -> bool:
    """Whether a live process holds the lock file at ``path`` (a missing file is no one's)."""
    try:
        handle = open(path, encoding="utf-8")  # closed below, whatever happens
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        handle.close()
    return False


def disk_fault(exc: sqlite3.OperationalError) -> StoreUnavailable | None:
    """``StoreUnavailable`` (503, retryable) if ``exc`` is SQLite failing to reach its disk, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        fault = (code & 0xFF) in _DISK_FAULTS
    else:
        fault = any(word in str(exc).lower() for word in _DISK_FAULT_WORDS)
    if not fault:
        return None
    return StoreUnavailable(f"the store could not write ({exc}); nothing was acknowledged, retry later",
                            retry_after_s=5.0)


class SqliteStore(Store):
    """The store in a SQLite file (``path`` may be ``:memory:``). Thread-safe; idempotent ``close``."""

    integrity_error: ClassVar[type[Exception]] = sqlite3.IntegrityError
    _begin: ClassVar[str] = "BEGIN IMMEDIATE"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(SCHEMA.format(rowid="", real="REAL", bigint="INTEGER"))
        for table, column, statement in MIGRATIONS:  # a file made by an older version lacks these
            if column not in {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}:
                self._conn.execute(statement)
        self._reader_conn = self._conn
        if path not in ("", ":memory:"):  # an in-memory database exists on one connection only
            self._reader_conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._reader_conn.execute("PRAGMA busy_timeout=5000")
        else:
            self._read_lock = self._lock  # one connection: reads and writes take the same lock
        self._writer = Tx(self._conn)
        self._reader = Tx(self._reader_conn)
        self._replica: str | None = None
        self._lock_file: IO[str] | None = None
        self._locks_dir = None if path in ("", ":memory:") else Path(f"{path}-replicas")

    def register_replica(self, replica: str) -> None:
        """Hold ``replica``'s lock file beside the database until ``close`` (or this process's death).

        Raises:
            RuntimeError: a live process holds that replica's lock (its name is taken).
        """
        if self._locks_dir is not None:
            self._locks_dir.mkdir(mode=0o700, exist_ok=True)
            handle = open(self._locks_dir / _lock_name(replica), "a+", encoding="utf-8")  # kept open while held
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise RuntimeError(f"replica {replica!r} is already live on this database") from None
            old, self._lock_file = self._lock_file, handle
            if old is not None:
                old.close()
        self._replica = replica

    def renew_replica(self) -> bool:
        """Whether a replica is registered: a file lock is lost only with the process that holds it."""
        return self._replica is not None

    def _alive(self, tx: Tx, holders: set[str]) -> set[str]:
        if self._locks_dir is None:
            return {h for h in holders if h == self._replica}
        return {h for h in holders if _held(self._locks_dir / _lock_name(h))}

    def _rollback(self) -> None:
        if self._conn.in_transaction:  # SQLite may have undone it already (disk full)
            self._conn.execute("ROLLBACK")

    def _in_transaction(self) -> bool:
        return self._conn.in_transaction

    def _unavailable(self, exc: Exception) -> StoreUnavailable | None:
        return disk_fault(exc) if isinstance(exc, sqlite3.OperationalError) else None

    def _close(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_file.name)
            self._lock_file.close()
            self._lock_file = None
        self._conn.close()
        if self._reader_conn is not self._conn:
            self._reader_conn.close()
