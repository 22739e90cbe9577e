"""Durable state in SQLite: registered tasks, and every episode's trajectory as it happens.

A step is written before its result is returned, so a crash or restart loses no completed
step; finished episodes export as JSONL for training; per-task reward statistics come from
the same rows. A PostgreSQL URL is the fleet upgrade path: this module is the only one that
speaks SQL.

Two connections to a file database: one writer, guarded by a lock (SQLite serializes writers
anyway), and one reader, so a read never waits behind a write (WAL mode: readers see the last
commit while a write is under way). ``synchronous=FULL``: a commit that has returned is on
disk, not only in the OS cache, so "acknowledged" survives a power cut as well as a crash.
The fsync this costs (~1 ms here) is paid once per group, not per step: the episode writes
(``episode_op``, ``step_op``, ``finish_op``) are operations that ``commit_group`` runs many at
a time in one transaction (see ``toolgym.server.writer``), each in its own savepoint so one
failing write never undoes its neighbours. The plain methods (``add_step`` ...) run one
operation in its own transaction, for callers that write one thing at a time.

A write that SQLite refuses for want of a working disk (full, I/O error, locked past its
timeout) raises ``StoreUnavailable`` (``disk_fault``): nothing of it is kept, and the next write
succeeds once the disk does.

Size: a little over 400 lines, because it is the one module that speaks SQL (schema, writes,
reads and statistics); splitting it would spread the schema over several files.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from toolgym.errors import StoreUnavailable

__all__ = ["MIGRATIONS", "EpisodeRow", "Outcome", "Store", "TaskStatsRow", "TimelineRow", "WriteOp", "disk_fault"]

WriteOp = Callable[[sqlite3.Connection], Any]
"""One write: runs inside a transaction (and a savepoint) on the writer connection."""


_DISK_FAULTS = frozenset({5, 6, 8, 10, 13, 14})
"""SQLite's primary result codes for the disk or the file failing, not the SQL: BUSY, LOCKED,
READONLY, IOERR, FULL, CANTOPEN (sqlite.org/rescode.html)."""
_DISK_FAULT_WORDS = ("disk is full", "disk i/o error", "database is locked", "readonly database",
                     "unable to open database")
"""The same faults by message, where ``sqlite_errorcode`` is missing (Python before 3.11)."""


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


@dataclass(frozen=True)
class Outcome:
    """What one operation of a group commit gave: its value, or the error that undid it."""

    value: Any = None
    error: BaseException | None = None

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    env_id TEXT NOT NULL, id TEXT NOT NULL, split TEXT NOT NULL,
    record TEXT NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (env_id, id)
);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, env_id TEXT NOT NULL, task_id TEXT NOT NULL,
    split TEXT NOT NULL, seed INTEGER, options TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, turn INTEGER NOT NULL DEFAULT 0, total_reward REAL NOT NULL DEFAULT 0,
    success INTEGER, reset_result TEXT NOT NULL, parent_id TEXT, parent_turn INTEGER,
    created REAL NOT NULL, updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_owner ON episodes (owner, created);
CREATE INDEX IF NOT EXISTS episodes_task ON episodes (env_id, task_id);
CREATE INDEX IF NOT EXISTS episodes_status ON episodes (status, updated);
CREATE TABLE IF NOT EXISTS steps (
    episode_id TEXT NOT NULL, turn INTEGER NOT NULL, action TEXT NOT NULL,
    result TEXT NOT NULL, mean_logprob REAL, idempotency_key TEXT, created REAL NOT NULL,
    sample TEXT,
    PRIMARY KEY (episode_id, turn)
);
CREATE TABLE IF NOT EXISTS retired_tasks (
    env_id TEXT NOT NULL, task_id TEXT NOT NULL, reason TEXT, created REAL NOT NULL,
    PRIMARY KEY (env_id, task_id)
);
"""

MIGRATIONS = (
    ("steps", "sample", "ALTER TABLE steps ADD COLUMN sample TEXT"),
)
"""Columns added after a database file may have been made: (table, column, the statement that adds it).

``SCHEMA`` already has them, so only a file made by an older version runs a statement; each is a
plain ``ADD COLUMN`` of a nullable column, so old rows read as NULL.
"""


@dataclass(frozen=True)
class EpisodeRow:
    """One stored episode: task, options, progress as of its last committed step, the reset's answer.

    ``status`` is ``live``, ``finished`` or ``interrupted`` (left live by a run that stopped
    without closing it); ``created`` and ``updated`` are Unix times in seconds.
    """

    id: str
    owner: str
    env_id: str
    task_id: str
    split: str
    seed: int | None
    options: dict[str, Any]
    status: str
    reason: str | None
    turn: int
    total_reward: float
    reset_result: dict[str, Any]
    parent_id: str | None
    parent_turn: int | None
    created: float
    updated: float


@dataclass(frozen=True)
class TaskStatsRow:
    """One task's figures across its stored episodes (see ``Store.task_stats``); no finished one: mean_return 0.0."""

    task_id: str
    episodes: int
    finished: int
    mean_return: float
    successes: int
    mean_logprob: float | None


@dataclass(frozen=True)
class TimelineRow:
    """One ended episode as a point in time (see ``Store.timeline``); ``success`` is None when it was not judged."""

    episode_id: str
    env_id: str
    task_id: str
    ended: float
    total_reward: float
    success: bool | None
    status: str
    reason: str | None


class Store:
    """The SQLite store (``path`` may be ``:memory:``). Thread-safe; idempotent ``close``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(SCHEMA)
            self._migrate()
        self._reader, self._read_lock = self._conn, self._lock
        if path not in ("", ":memory:"):  # an in-memory database exists on one connection only
            self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._reader.execute("PRAGMA busy_timeout=5000")
            self._read_lock = threading.Lock()
        self._closed = False

    def _migrate(self) -> None:
        """Add the ``MIGRATIONS`` columns a database file made by an older version lacks (under the lock)."""
        for table, column, statement in MIGRATIONS:
            present = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})").fetchall()}
            if column not in present:
                self._conn.execute(statement)

    def close(self) -> None:
        """Close both connections; later calls do nothing, so every shutdown path may call it."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._reader is not self._conn:
                    with self._read_lock:
                        self._reader.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read on the reader connection: it sees the last commit and never waits for a write."""
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    # --- transactions ---------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writer connection; SQLite failing to reach its disk leaves as ``StoreUnavailable``.

        A full disk, an I/O error or a lock held past its timeout pass once the disk does, so
        the caller gets a retryable 503 rather than a 500; an error in the SQL itself is a bug
        and propagates as it is.
        """
        with self._lock:
            try:
                yield
            except sqlite3.OperationalError as exc:
                refused = disk_fault(exc)
                if refused is None:
                    raise
                raise refused from exc

    def _transaction(self, op: WriteOp) -> Any:
        """Run one operation in its own transaction; its error propagates, nothing is kept."""
        (outcome,) = self.commit_group([op])
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def commit_group(self, ops: Sequence[WriteOp]) -> list[Outcome]:
        """Run ``ops`` in one transaction and commit once; one ``Outcome`` per op, in order.

        Each runs in a savepoint: one that raises is rolled back alone and its error returned in
        its ``Outcome``; the others commit. If the commit itself fails, or an op fails in a way
        that makes SQLite roll the whole transaction back (``SQLITE_FULL``, ``SQLITE_IOERR``),
        nothing is kept and that error propagates.
        """
        outcomes: list[Outcome] = []
        with self._writing():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    self._conn.execute("SAVEPOINT op")
                    try:
                        value = op(self._conn)
                    except Exception as exc:
                        if not self._conn.in_transaction:
                            raise  # SQLite undid the whole transaction (disk full, I/O error): all fail
                        self._conn.execute("ROLLBACK TO op")
                        self._conn.execute("RELEASE op")
                        outcomes.append(Outcome(error=exc))
                    else:
                        self._conn.execute("RELEASE op")
                        outcomes.append(Outcome(value=value))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return outcomes

    # --- tasks ------------------------------------------------------------------------------
    def add_tasks(self, env_id: str, rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]]) -> None:
        """Insert ``(id, split, record, metadata)`` rows in one transaction."""
        now = time.time()
        with self._writing():
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT INTO tasks (env_id, id, split, record, metadata, created) VALUES (?,?,?,?,?,?)",
                    [(env_id, tid, split, json.dumps(rec), json.dumps(meta), now)
                     for tid, split, rec, meta in rows],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have undone it already (disk full)
                    self._conn.execute("ROLLBACK")
                raise

    def iter_tasks(self) -> Iterator[tuple[str, str, str, dict[str, Any], dict[str, Any]]]:
        """Every registered task as ``(env_id, id, split, record, metadata)``, in registration order."""
        for env_id, tid, split, rec, meta in self._query(
            "SELECT env_id, id, split, record, metadata FROM tasks ORDER BY created, rowid"
        ):
            yield env_id, tid, split, json.loads(rec), json.loads(meta)

    # --- episodes ---------------------------------------------------------------------------
    @staticmethod
    def episode_op(
        *, episode_id: str, owner: str, env_id: str, task_id: str, split: str, seed: int | None,
        options: dict[str, Any], reset_result: dict[str, Any], parent_id: str | None = None,
        parent_turn: int | None = None,
    ) -> WriteOp:
        """The write of a new episode (for ``commit_group``)."""
        now = time.time()
        params = (episode_id, owner, env_id, task_id, split, seed, json.dumps(options), json.dumps(reset_result),
                  parent_id, parent_turn, now, now)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO episodes (id, owner, env_id, task_id, split, seed, options, status, reason, turn,"
                " total_reward, reset_result, parent_id, parent_turn, created, updated)"
                " VALUES (?,?,?,?,?,?,?,'live',NULL,0,0,?,?,?,?,?)",
                params,
            )

        return op

    def add_episode(
        self, *, episode_id: str, owner: str, env_id: str, task_id: str, split: str, seed: int | None,
        options: dict[str, Any], reset_result: dict[str, Any], parent_id: str | None = None,
        parent_turn: int | None = None,
    ) -> None:
        """Record a new episode, in its own transaction."""
        self._transaction(self.episode_op(
            episode_id=episode_id, owner=owner, env_id=env_id, task_id=task_id, split=split, seed=seed,
            options=options, reset_result=reset_result, parent_id=parent_id, parent_turn=parent_turn,
        ))

    @staticmethod
    def step_op(
        episode_id: str, turn: int, action: Any, result: dict[str, Any], *,
        mean_logprob: float | None, idempotency_key: str | None, total_reward: float,
        status: str, reason: str | None, success: bool | None = None, sample: dict[str, Any] | None = None,
    ) -> WriteOp:
        """The write of one step and the episode's new state (for ``commit_group``).

        The JSON is encoded here, in the caller, so the writer thread spends its time on SQL.
        ``sample`` is the policy's token ids and log-probabilities in wire form, stored as JSON text.
        """
        now = time.time()
        step_row = (episode_id, turn, json.dumps(action), json.dumps(result), mean_logprob, idempotency_key, now,
                    None if sample is None else json.dumps(sample))
        episode_row = (turn + 1, total_reward, status, reason, None if success is None else int(success), now,
                       episode_id)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO steps (episode_id, turn, action, result, mean_logprob, idempotency_key, created, sample)"
                " VALUES (?,?,?,?,?,?,?,?)",
                step_row,
            )
            conn.execute(
                "UPDATE episodes SET turn=?, total_reward=?, status=?, reason=?, success=?, updated=? WHERE id=?",
                episode_row,
            )

        return op

    def add_step(
        self, episode_id: str, turn: int, action: Any, result: dict[str, Any], *,
        mean_logprob: float | None, idempotency_key: str | None, total_reward: float,
        status: str, reason: str | None, success: bool | None = None, sample: dict[str, Any] | None = None,
    ) -> None:
        """Record one step and the episode's new state in one transaction."""
        self._transaction(self.step_op(
            episode_id, turn, action, result, mean_logprob=mean_logprob, idempotency_key=idempotency_key,
            total_reward=total_reward, status=status, reason=reason, success=success, sample=sample,
        ))

    @staticmethod
    def finish_op(episode_id: str, status: str, reason: str | None) -> WriteOp:
        """The write that ends a live episode (for ``commit_group``); a finished one is kept."""
        params = (status, reason, time.time(), episode_id)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE episodes SET status=?, reason=COALESCE(reason, ?), updated=? WHERE id=? AND status='live'",
                params,
            )

        return op

    def finish_episode(self, episode_id: str, status: str, reason: str | None) -> None:
        """End a live episode, in its own transaction."""
        self._transaction(self.finish_op(episode_id, status, reason))

    def interrupt_live(self, *, before: float | None = None, keep: frozenset[str] = frozenset()) -> int:
        """Mark live episodes that no process holds any more as interrupted; returns how many.

        Args:
            before: only those whose last write is older than this Unix time (idle ones); None: all.
                A crashed run's recent episodes stay live, so the next run can resume them by replay.
            keep: ids this process holds (live in memory); never marked.
        """
        cutoff = time.time() if before is None else before
        with self._writing():
            ids = [i for (i,) in self._conn.execute(
                "SELECT id FROM episodes WHERE status='live' AND updated<=?", (cutoff,)
            ).fetchall() if i not in keep]
            if not ids:
                return 0
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "UPDATE episodes SET status='interrupted', updated=? WHERE id=? AND status='live'",
                    [(time.time(), i) for i in ids],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have undone it already (disk full)
                    self._conn.execute("ROLLBACK")
                raise
            return len(ids)

    def _row(self, r: tuple[Any, ...]) -> EpisodeRow:
        return EpisodeRow(
            id=r[0], owner=r[1], env_id=r[2], task_id=r[3], split=r[4], seed=r[5], options=json.loads(r[6]),
            status=r[7], reason=r[8], turn=r[9], total_reward=r[10], reset_result=json.loads(r[11]),
            parent_id=r[12], parent_turn=r[13], created=r[14], updated=r[15],
        )

    _COLS = ("id, owner, env_id, task_id, split, seed, options, status, reason, turn, total_reward,"
             " reset_result, parent_id, parent_turn, created, updated")

    def get_episode(self, episode_id: str) -> EpisodeRow | None:
        """The stored episode, or None; any owner's (the caller checks ownership)."""
        rows = self._query(f"SELECT {self._COLS} FROM episodes WHERE id=?", (episode_id,))
        return self._row(rows[0]) if rows else None

    def list_episodes(self, owner: str, *, status: str | None, offset: int, limit: int) -> tuple[list[EpisodeRow], int]:
        """A page of ``owner``'s episodes, oldest first, and how many match in all (for paging)."""
        where, params = "owner=?", [owner]
        if status:
            where += " AND status=?"
            params.append(status)
        total = self._query(f"SELECT COUNT(*) FROM episodes WHERE {where}", tuple(params))[0][0]
        rows = self._query(
            f"SELECT {self._COLS} FROM episodes WHERE {where} ORDER BY created, rowid LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [self._row(r) for r in rows], int(total)

    def steps(self, episode_id: str) -> list[dict[str, Any]]:
        """An episode's steps in turn order, in wire form: turn, action, the result's keys, mean_logprob, sample.

        ``sample`` is None for a step that carried none.
        """
        rows = self._query(
            "SELECT turn, action, result, mean_logprob, sample FROM steps WHERE episode_id=? ORDER BY turn",
            (episode_id,),
        )
        return [
            {"turn": t, "action": json.loads(a), **json.loads(res), "mean_logprob": lp,
             "sample": None if smp is None else json.loads(smp)}
            for t, a, res, lp, smp in rows
        ]

    def idempotency_keys(self, episode_id: str) -> dict[str, int]:
        """The ``Idempotency-Key`` of each of an episode's steps that had one -> its turn.

        A resumed episode answers a retried step from this map, as the process that played it would have.
        """
        return {k: t for k, t in self._query(
            "SELECT idempotency_key, turn FROM steps WHERE episode_id=? AND idempotency_key IS NOT NULL",
            (episode_id,),
        )}

    # --- statistics -------------------------------------------------------------------------
    def task_stats(self, env_id: str) -> list[TaskStatsRow]:
        """Per-task figures of ``env_id``, from every stored episode, ordered by task id.

        Per task: episodes served, finished ones, the mean return of finished ones, finished ones
        that succeeded (the family's rule, stored at the end), and the mean of the policy's
        reported mean log-probabilities. "Finished" here counts only episodes whose success was
        judged, so closed or interrupted ones do not weigh on the figures.
        """
        rows = self._query(
            "SELECT e.task_id, COUNT(*),"
            " SUM(CASE WHEN e.status='finished' AND e.success IS NOT NULL THEN 1 ELSE 0 END),"
            " AVG(CASE WHEN e.status='finished' AND e.success IS NOT NULL THEN e.total_reward END),"
            " SUM(CASE WHEN e.status='finished' AND e.success = 1 THEN 1 ELSE 0 END),"
            " (SELECT AVG(s.mean_logprob) FROM steps s JOIN episodes e2 ON s.episode_id = e2.id"
            "   WHERE e2.env_id = e.env_id AND e2.task_id = e.task_id AND s.mean_logprob IS NOT NULL)"
            " FROM episodes e WHERE e.env_id=? GROUP BY e.task_id ORDER BY e.task_id",
            (env_id,),
        )
        return [
            TaskStatsRow(task_id=r[0], episodes=r[1], finished=r[2] or 0, mean_return=float(r[3] or 0.0),
                         successes=r[4] or 0, mean_logprob=r[5])
            for r in rows
        ]

    def timeline(self, owner: str, *, env_id: str | None, limit: int) -> list[TimelineRow]:
        """``owner``'s last ``limit`` ended episodes, oldest first: when each ended, its return and success.

        For plots of reward and pass rate over time (the viewer); ``updated`` is the end time of
        an ended episode, since nothing writes to it afterwards.
        """
        where, params = "owner=? AND status!='live'", [owner]
        if env_id:
            where += " AND env_id=?"
            params.append(env_id)
        rows = self._query(
            "SELECT id, env_id, task_id, updated, total_reward, success, status, reason FROM"
            " (SELECT rowid AS rid, * FROM episodes"
            f" WHERE {where} ORDER BY updated DESC, rowid DESC LIMIT ?) ORDER BY updated, rid",
            (*params, limit),
        )
        return [TimelineRow(episode_id=r[0], env_id=r[1], task_id=r[2], ended=r[3], total_reward=r[4],
                            success=None if r[5] is None else bool(r[5]), status=r[6], reason=r[7]) for r in rows]

    # --- the data loop: retirement and task metadata -------------------------------------------
    def retire_tasks(self, env_id: str, task_ids: list[str], reason: str | None) -> list[str]:
        """Mark tasks retired (samplers skip them); returns the ids that were not retired yet."""
        now = time.time()
        fresh: list[str] = []
        with self._writing():
            self._conn.execute("BEGIN")
            try:
                for task_id in task_ids:
                    cur = self._conn.execute(
                        "INSERT OR IGNORE INTO retired_tasks (env_id, task_id, reason, created) VALUES (?,?,?,?)",
                        (env_id, task_id, reason, now),
                    )
                    if cur.rowcount:
                        fresh.append(task_id)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have undone it already (disk full)
                    self._conn.execute("ROLLBACK")
                raise
        return fresh

    def unretire_tasks(self, env_id: str, task_ids: list[str]) -> list[str]:
        """Undo ``retire_tasks``; returns the ids that were retired."""
        back: list[str] = []
        with self._writing():
            self._conn.execute("BEGIN")
            try:
                for task_id in task_ids:
                    cur = self._conn.execute(
                        "DELETE FROM retired_tasks WHERE env_id=? AND task_id=?", (env_id, task_id)
                    )
                    if cur.rowcount:
                        back.append(task_id)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have undone it already (disk full)
                    self._conn.execute("ROLLBACK")
                raise
        return back

    def retired_ids(self, env_id: str) -> set[str]:
        """The retired task ids of ``env_id``."""
        return {t for (t,) in self._query("SELECT task_id FROM retired_tasks WHERE env_id=?", (env_id,))}

    def retired_pairs(self) -> list[tuple[str, str]]:
        """Every retired ``(env_id, task_id)``, oldest first (to mark them again at startup)."""
        return [(e, t) for e, t in self._query("SELECT env_id, task_id FROM retired_tasks ORDER BY created, rowid")]

    def set_task_metadata(self, env_id: str, task_id: str, metadata: dict[str, Any]) -> bool:
        """Replace a registered task's stored metadata; False if the task is not stored.

        Built-in tasks are not stored, so their metadata cannot be changed here.
        """
        with self._writing():
            cur = self._conn.execute(
                "UPDATE tasks SET metadata=? WHERE env_id=? AND id=?", (json.dumps(metadata), env_id, task_id)
            )
            return bool(cur.rowcount)
