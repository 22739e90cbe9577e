"""The PostgreSQL store: a ``postgresql://user:pass@host:port/db`` URL, shared by several replicas.

psycopg 3, synchronous, driven by the same group-commit writer thread as SQLite
(``toolgym.server.writer``): a step is acknowledged only after the transaction holding it has
committed, and the writer session sets ``synchronous_commit=on``, so a commit that has returned
is in the server's write-ahead log on disk, whatever the cluster's default.

Three connections: the writer (under the store's lock), the reader (reads never wait behind a
write), and the lease, which holds this replica's session-level advisory lock for as long as the
process lives. PostgreSQL drops a session's locks when its connection ends, however the process
ended (``kill -9`` closes the socket at once; a vanished host is noticed by TCP keepalives, set
short on that session). So "the replica that holds this episode is alive" is "its advisory lock
is held", read from ``pg_locks``: the same rule as the instance lock files of
``toolgym.server.instance``, with the database as the lock manager every replica shares.

The schema is created on first use (``CREATE TABLE IF NOT EXISTS``, under a transaction-level
advisory lock so two replicas starting at once do not race); tables carry an explicit ``rowid``
column so the shared SQL's ``ORDER BY created, rowid`` keeps insertion order.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, ClassVar

import psycopg
from psycopg.pq import TransactionStatus

from toolgym.errors import StoreUnavailable
from toolgym.server.store import MIGRATIONS, SCHEMA, Store, Tx

__all__ = ["PgStore", "replica_lock_key"]

SCHEMA_LOCK = 0x546F6F6C47796D  # "ToolGym": serializes schema creation between replicas
LEASE_SESSION = ("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5;"
                 " SET tcp_keepalives_count = 3")
"""Server-side keepalives on the lease session: a vanished replica host frees its lock within ~25 s."""


def _connect(url: str, application_name: str = "toolgym") -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are opened explicitly) with client-side TCP keepalives.

    A connection to a vanished database server then fails within ~25 s instead of hanging. The
    application name shows in ``pg_stat_activity`` (a lease session names its replica).
    """
    return psycopg.connect(url, autocommit=True, keepalives=1, keepalives_idle=10, keepalives_interval=5,
                           keepalives_count=3, application_name=application_name)


def replica_lock_key(replica: str) -> int:
    """The 64-bit advisory lock key of ``replica`` (a hash, so any string names a replica)."""
    digest = hashlib.blake2b(f"toolgym-replica:{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_parts(key: int) -> tuple[int, int]:
    """How ``pg_locks`` shows a bigint advisory key: (classid, objid), the high and low 32 bits."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


class PgStore(Store):
    """The store in a PostgreSQL database. Thread-safe; idempotent ``close``.

    Raises:
        psycopg.OperationalError: the database cannot be reached (at construction).
    """

    integrity_error: ClassVar[type[Exception]] = psycopg.IntegrityError
    _begin: ClassVar[str] = "BEGIN"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._conn = _connect(url)
        try:
            self._conn.execute("SET synchronous_commit = on")
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                self._conn.execute(SCHEMA.format(rowid="rowid BIGSERIAL, ", real="DOUBLE PRECISION",
                                                 bigint="BIGINT"))
                for table, column, statement in MIGRATIONS:  # a database made by an older version lacks these
                    if not self._conn.execute(
                        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
                        " AND table_name = %s AND column_name = %s", (table, column),
                    ).fetchone():
                        self._conn.execute(statement)
            self._reader_conn = _connect(url)
        except BaseException:
            self._conn.close()
            raise
        self._lease: psycopg.Connection[Any] | None = None
        self._lease_lock = threading.Lock()
        self._replica: str | None = None
        self._writer = Tx(self._conn, "%s")
        self._reader = Tx(self._reader_conn, "%s")

    def register_replica(self, replica: str) -> None:
        """Take ``replica``'s advisory lock on a session of its own, held until ``close`` or death.

        Raises:
            RuntimeError: another live session holds that replica's lock (its name is taken).
        """
        lease = _connect(self._url, application_name=f"toolgym-lease-{replica}"[:63])
        try:
            lease.execute(LEASE_SESSION)
            row = lease.execute("SELECT pg_try_advisory_lock(%s)", (replica_lock_key(replica),)).fetchone()
            if not row or not row[0]:
                raise RuntimeError(f"replica {replica!r} is already live on this database")
        except BaseException:
            lease.close()
            raise
        with self._lease_lock:
            old, self._lease, self._replica = self._lease, lease, replica
        if old is not None:
            old.close()

    def renew_replica(self) -> bool:
        """Whether the lease session still answers; if it was lost, the lock is taken again on a new one.

        Lost: a database restart, a network cut, an administrator's ``pg_terminate_backend``.
        While it was lost, other replicas could take this one's episodes; the fenced writes
        (``step_op``/``finish_op`` with ``holder``) keep this replica from writing over them.
        """
        with self._lease_lock:
            lease, replica = self._lease, self._replica
            if lease is None or replica is None:
                return False
            try:
                lease.execute("SELECT 1")
                return True
            except psycopg.Error:
                lease.close()
        try:
            self.register_replica(replica)
        except (psycopg.Error, RuntimeError):
            return False
        return True

    def _alive(self, tx: Tx, holders: set[str]) -> set[str]:
        if not holders:
            return set()
        held = {(int(c), int(o)) for c, o in tx.query(
            "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )}
        return {h for h in holders if _lock_parts(replica_lock_key(h)) in held}

    def _reconnect(self, reader: bool) -> None:
        """A new session for a connection the database dropped (a restart, a network cut).

        The write or read that found it dropped failed (a write as ``StoreUnavailable``); the
        next one gets a new session. If the database is still away, connecting raises.
        """
        conn = self._reader_conn if reader else self._conn
        if self._closed or not conn.broken:
            return
        fresh = _connect(self._url)
        if not reader:
            fresh.execute("SET synchronous_commit = on")
        conn.close()
        if reader:
            self._reader_conn, self._reader = fresh, Tx(fresh, "%s")
        else:
            self._conn, self._writer = fresh, Tx(fresh, "%s")

    def _in_transaction(self) -> bool:
        return self._conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def _unavailable(self, exc: Exception) -> StoreUnavailable | None:
        if not isinstance(exc, psycopg.OperationalError):  # a lost connection, a full disk, a shutdown
            return None
        return StoreUnavailable(f"the database could not write ({exc}); nothing was acknowledged, retry later",
                                retry_after_s=5.0)

    def _rollback(self) -> None:
        status = self._conn.info.transaction_status
        if not self._conn.closed and status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            self._conn.execute("ROLLBACK")

    def _close(self) -> None:
        with self._lease_lock:
            lease, self._lease = self._lease, None
        for conn in (self._conn, self._reader_conn, lease):
            if conn is not None:
                conn.close()
