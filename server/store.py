"""Durable state: registered tasks, and every episode's trajectory as it happens.

A step is written before its result is returned, so a crash or restart loses no completed
step; finished episodes export as JSONL for training; per-task reward statistics come from
the same rows. Two databases speak the same SQL here: SQLite (``SqliteStore``, a file, the
default) and PostgreSQL (``PgStore``, a ``postgresql://`` URL, shared by several replicas);
``open_store`` picks one from the ``db_path`` setting. This module holds what they share: every
query (written once, with ``?`` placeholders that ``Tx`` turns into what the driver wants; the
schema and row types are in ``store_sql``) and the group commit; the subclasses hold only
connections and the liveness rule.

Writes run on one writer connection, guarded by a lock; reads on another, so a read never
waits behind a write. The episode writes (``episode_op``, ``step_op``, ``finish_op``,
``claim_op``) are operations that ``commit_group`` runs many at a time in one transaction (see
``toolgym.server.writer``), each in its own savepoint so one failing write never undoes its
neighbours, and commits once: a commit that has returned is on disk, so the fsync it costs is
paid once per group, not per step. The plain methods (``add_step`` ...) run one operation in
its own transaction, for callers that write one thing at a time.

Episode ownership across replicas: each episode row names its ``holder``, the replica (server
process) that plays it. A replica is alive while it holds its liveness lock (``register_replica``:
on PostgreSQL a session lock the database drops when the process dies, however it dies; beside a
SQLite file, a lock file the kernel drops the same way). A replica resumes (``claim_op``) or interrupts
(``interrupt_live``) only episodes whose holder is not alive, so replicas sharing a database never
take each other's live episodes; step and finish writes name their holder (fenced), so a replica
that lost its lock for a while writes nothing over the one that took an episode over.

A write the database refuses for want of a working disk or connection (SQLite: disk full, I/O
error, locked past its timeout; PostgreSQL: the server unreachable, its disk full) raises
``StoreUnavailable`` (503, retryable): nothing of it is kept, and the next write succeeds once
the database does.

Size: a little over 400 lines, because it is the one module that holds the SQL of both
dialects (writes, reads, ownership and statistics); splitting it would spread the queries that
must agree with one schema over several files.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from toolgym.errors import DuplicateTask, StoreUnavailable
from toolgym.server.store_sql import (
    COLS,
    MIGRATIONS,
    SCHEMA,
    Claim,
    EpisodeRow,
    Outcome,
    TaskStatsRow,
    TimelineRow,
    Tx,
    WriteOp,
    episode_row,
)

__all__ = ["MIGRATIONS", "SCHEMA", "Claim", "EpisodeRow", "NotHolder", "Outcome", "Store", "TaskStatsRow",
           "TimelineRow", "Tx", "WriteOp", "is_postgres_url", "open_store"]

PG_SCHEMES = ("postgresql://", "postgres://")
"""A ``db_path`` starting with one of these is a PostgreSQL URL; anything else is a SQLite file."""


def is_postgres_url(db_path: str) -> bool:
    """Whether ``db_path`` names a PostgreSQL database rather than a SQLite file."""
    return db_path.startswith(PG_SCHEMES)


def open_store(db_path: str) -> Store:
    """The store for the ``db_path`` setting: PostgreSQL for a ``postgresql://`` URL, else a SQLite file.

    The PostgreSQL driver (extra ``postgres``) is imported only when a URL asks for it.

    Raises:
        RuntimeError: a PostgreSQL URL, and psycopg is not installed.
    """
    if is_postgres_url(db_path):
        try:
            from toolgym.server.store_pg import PgStore
        except ImportError as exc:
            raise RuntimeError(
                f"a PostgreSQL database needs psycopg: pip install 'toolgym[postgres]' ({exc})"
            ) from None
        return PgStore(db_path)
    from toolgym.server.store_sqlite import SqliteStore

    return SqliteStore(db_path)


class NotHolder(Exception):
    """A fenced write found another replica holding the episode: nothing was written.

    Internal to the server: the episode manager drops its copy and answers a retryable ``Unavailable``.
    """

    def __init__(self, episode_id: str, replica: str) -> None:
        super().__init__(f"episode {episode_id} is no longer held by replica {replica}")
        self.episode_id = episode_id


class Store:
    """The store's interface and its SQL; a subclass opens the connections (thread-safe; idempotent ``close``).

    A subclass sets ``_writer`` and ``_reader`` (``Tx``), ``_begin`` (the statement that opens a
    write transaction), ``integrity_error`` (what a duplicate key raises), and implements
    ``register_replica``, ``_alive``, ``_rollback`` and ``_close``.
    """

    integrity_error: ClassVar[type[Exception]] = Exception
    """The driver's error for a duplicate key (a turn written twice, an id taken)."""
    _begin: ClassVar[str] = "BEGIN"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._writer: Tx
        self._reader: Tx

    # --- what a dialect provides ----------------------------------------------------------------
    def register_replica(self, replica: str) -> None:
        """Hold ``replica``'s liveness lock until ``close``, so others see its episodes as held."""
        raise NotImplementedError

    def renew_replica(self) -> bool:
        """Whether the liveness lock is held, taking it again if its session was lost (the reaper calls it)."""
        raise NotImplementedError

    def _alive(self, tx: Tx, holders: set[str]) -> set[str]:
        """Those of ``holders`` whose replica is alive (holds its liveness lock)."""
        raise NotImplementedError

    def _rollback(self) -> None:
        """Roll the writer connection's transaction back, if one is open."""
        raise NotImplementedError

    def _in_transaction(self) -> bool:
        """Whether the writer connection is inside a transaction (the database may have undone it)."""
        raise NotImplementedError

    def _unavailable(self, exc: Exception) -> StoreUnavailable | None:
        """``StoreUnavailable`` if ``exc`` is the database failing to reach its disk or the server, else None."""
        raise NotImplementedError

    def _close(self) -> None:
        """Close the connections."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connections; later calls do nothing, so every shutdown path may call it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._read_lock is self._lock:  # one connection serves both
                self._close()
                return
            with self._read_lock:
                self._close()

    def _reconnect(self, reader: bool) -> None:
        """Replace the reader's (or writer's) connection if the database dropped it; a file never does."""

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read on the reader connection: it sees the last commit and never waits for a write."""
        with self._read_lock:
            self._reconnect(reader=True)
            return self._reader.query(sql, params)

    # --- transactions ---------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writer connection; the database failing to reach its disk leaves as ``StoreUnavailable``.

        A full disk, an I/O error, a lock held past its timeout or a lost connection pass once
        the database does, so the caller gets a retryable 503 rather than a 500; an error in the
        SQL itself is a bug and propagates as it is.
        """
        with self._lock:
            try:
                self._reconnect(reader=False)
                yield
            except Exception as exc:
                refused = self._unavailable(exc)
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
        that makes the database roll the whole transaction back (SQLite's ``SQLITE_FULL`` and
        ``SQLITE_IOERR``, a lost connection), nothing is kept and that error propagates.
        """
        outcomes: list[Outcome] = []
        with self._writing():
            tx = self._writer
            tx.execute(self._begin)
            try:
                for op in ops:
                    tx.execute("SAVEPOINT op")
                    try:
                        value = op(tx)
                    except Exception as exc:
                        if not self._in_transaction():
                            raise  # the database undid the whole transaction (disk full, I/O error): all fail
                        tx.execute("ROLLBACK TO SAVEPOINT op")
                        tx.execute("RELEASE SAVEPOINT op")
                        outcomes.append(Outcome(error=exc))
                    else:
                        tx.execute("RELEASE SAVEPOINT op")
                        outcomes.append(Outcome(value=value))
                tx.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return outcomes

    # --- tasks ------------------------------------------------------------------------------
    def add_tasks(self, env_id: str, rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]]) -> None:
        """Insert ``(id, split, record, metadata)`` rows in one transaction: all or none.

        A task already stored with the same split and record is left as it is (another replica
        sharing the database registered it first); one stored differently under the same id
        raises ``DuplicateTask`` and nothing is inserted.
        """
        now = time.time()

        def op(tx: Tx) -> None:
            for tid, split, rec, meta in rows:
                if tx.execute(
                    "INSERT INTO tasks (env_id, id, split, record, metadata, created) VALUES (?,?,?,?,?,?)"
                    " ON CONFLICT DO NOTHING",
                    (env_id, tid, split, json.dumps(rec), json.dumps(meta), now),
                ):
                    continue
                stored = tx.query("SELECT split, record FROM tasks WHERE env_id=? AND id=?", (env_id, tid))
                if not stored or stored[0][0] != split or json.loads(stored[0][1]) != rec:
                    raise DuplicateTask(env_id, tid)

        self._transaction(op)

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
        parent_turn: int | None = None, holder: str | None = None,
    ) -> WriteOp:
        """The write of a new episode, held by replica ``holder`` (for ``commit_group``)."""
        now = time.time()
        params = (episode_id, owner, env_id, task_id, split, seed, json.dumps(options), json.dumps(reset_result),
                  parent_id, parent_turn, now, now, holder)

        def op(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO episodes (id, owner, env_id, task_id, split, seed, options, status, reason, turn,"
                " total_reward, reset_result, parent_id, parent_turn, created, updated, holder)"
                " VALUES (?,?,?,?,?,?,?,'live',NULL,0,0,?,?,?,?,?,?)",
                params,
            )

        return op

    def add_episode(
        self, *, episode_id: str, owner: str, env_id: str, task_id: str, split: str, seed: int | None,
        options: dict[str, Any], reset_result: dict[str, Any], parent_id: str | None = None,
        parent_turn: int | None = None, holder: str | None = None,
    ) -> None:
        """Record a new episode, in its own transaction."""
        self._transaction(self.episode_op(
            episode_id=episode_id, owner=owner, env_id=env_id, task_id=task_id, split=split, seed=seed,
            options=options, reset_result=reset_result, parent_id=parent_id, parent_turn=parent_turn, holder=holder,
        ))

    @staticmethod
    def step_op(
        episode_id: str, turn: int, action: Any, result: dict[str, Any], *,
        mean_logprob: float | None, idempotency_key: str | None, total_reward: float,
        status: str, reason: str | None, success: bool | None = None, sample: dict[str, Any] | None = None,
        holder: str | None = None,
    ) -> WriteOp:
        """The write of one step and the episode's new state (for ``commit_group``).

        The JSON is encoded here, in the caller, so the writer thread spends its time on SQL.
        ``sample`` is the policy's token ids and log-probabilities in wire form, stored as JSON text.
        With ``holder``, the write is fenced: if another replica holds the episode now (it took it
        over while this one was thought dead), nothing is written and ``NotHolder`` is raised.
        """
        now = time.time()
        step_row = (episode_id, turn, json.dumps(action), json.dumps(result), mean_logprob, idempotency_key, now,
                    None if sample is None else json.dumps(sample))
        state_row: tuple[Any, ...] = (turn + 1, total_reward, status, reason,
                                      None if success is None else int(success), now, episode_id)
        update = "UPDATE episodes SET turn=?, total_reward=?, status=?, reason=?, success=?, updated=? WHERE id=?"
        if holder is not None:
            update += " AND COALESCE(holder, '')=?"
            state_row += (holder,)

        def op(tx: Tx) -> None:
            if not tx.execute(update, state_row) and holder is not None:
                raise NotHolder(episode_id, holder)
            tx.execute(
                "INSERT INTO steps (episode_id, turn, action, result, mean_logprob, idempotency_key, created, sample)"
                " VALUES (?,?,?,?,?,?,?,?)",
                step_row,
            )  # a turn written twice raises here, and the op's savepoint undoes the update too

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
    def finish_op(episode_id: str, status: str, reason: str | None, holder: str | None = None) -> WriteOp:
        """The write that ends a live episode (for ``commit_group``); a finished one is kept.

        With ``holder``, only while that replica holds it: a replica never ends an episode another
        one took over.
        """
        params: tuple[Any, ...] = (status, reason, time.time(), episode_id)
        sql = "UPDATE episodes SET status=?, reason=COALESCE(reason, ?), updated=? WHERE id=? AND status='live'"
        if holder is not None:
            sql += " AND COALESCE(holder, '')=?"
            params += (holder,)

        def op(tx: Tx) -> None:
            tx.execute(sql, params)

        return op

    def finish_episode(self, episode_id: str, status: str, reason: str | None) -> None:
        """End a live episode, in its own transaction."""
        self._transaction(self.finish_op(episode_id, status, reason))

    def claim_op(self, episode_id: str, replica: str) -> WriteOp:
        """The write that makes ``replica`` the holder of a live episode whose holder is gone.

        Its value is a ``Claim``. Compare-and-set on the holder read, so of two replicas claiming
        the same orphan at once exactly one wins; an episode whose holder is alive is never taken.
        """

        def op(tx: Tx) -> Claim:
            rows = tx.query("SELECT status, holder FROM episodes WHERE id=?", (episode_id,))
            if not rows or rows[0][0] != "live":
                return Claim(claimed=False, live=False)
            holder = rows[0][1]
            if holder == replica:
                return Claim(claimed=True, live=True, holder=replica)
            if holder and self._alive(tx, {holder}):
                return Claim(claimed=False, live=True, holder=holder)
            taken = tx.execute(
                "UPDATE episodes SET holder=? WHERE id=? AND status='live' AND COALESCE(holder, '')=?",
                (replica, episode_id, holder or ""),
            )
            if not taken:  # changed since we read it (another replica claimed it, or it ended)
                return Claim(claimed=False, live=True, holder=None)
            return Claim(claimed=True, live=True, holder=replica)

        return op

    def interrupt_live(self, *, before: float | None = None, keep: frozenset[str] = frozenset()) -> int:
        """Mark live episodes that no replica holds any more as interrupted; returns how many.

        An episode whose holder is alive (another replica on the same database, or this one) is
        never marked, whatever its age.

        Args:
            before: only those whose last write is older than this Unix time (idle ones); None: all.
                A crashed run's recent episodes stay live, so the next run can resume them by replay.
            keep: ids this process holds (live in memory); never marked.
        """
        cutoff = time.time() if before is None else before

        def op(tx: Tx) -> int:
            rows = [(i, h) for i, h in tx.query(
                "SELECT id, holder FROM episodes WHERE status='live' AND updated<=?", (cutoff,)
            ) if i not in keep]
            alive = self._alive(tx, {h for _, h in rows if h})
            now, count = time.time(), 0
            for episode_id, holder in rows:
                if holder not in alive:
                    count += tx.execute(
                        "UPDATE episodes SET status='interrupted', updated=?"
                        " WHERE id=? AND status='live' AND COALESCE(holder, '')=?",
                        (now, episode_id, holder or ""),
                    )
            return count

        return int(self._transaction(op))

    def get_episode(self, episode_id: str) -> EpisodeRow | None:
        """The stored episode, or None; any owner's (the caller checks ownership)."""
        rows = self._query(f"SELECT {COLS} FROM episodes WHERE id=?", (episode_id,))
        return episode_row(rows[0]) if rows else None

    def list_episodes(self, owner: str, *, status: str | None, offset: int, limit: int) -> tuple[list[EpisodeRow], int]:
        """A page of ``owner``'s episodes, oldest first, and how many match in all (for paging)."""
        where, params = "owner=?", [owner]
        if status:
            where += " AND status=?"
            params.append(status)
        total = self._query(f"SELECT COUNT(*) FROM episodes WHERE {where}", params)[0][0]
        rows = self._query(
            f"SELECT {COLS} FROM episodes WHERE {where} ORDER BY created, rowid LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [episode_row(r) for r in rows], int(total)

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
            " FROM episodes e WHERE e.env_id=? GROUP BY e.env_id, e.task_id ORDER BY e.task_id",
            (env_id,),
        )
        return [
            TaskStatsRow(task_id=r[0], episodes=int(r[1]), finished=int(r[2] or 0), mean_return=float(r[3] or 0.0),
                         successes=int(r[4] or 0), mean_logprob=None if r[5] is None else float(r[5]))
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
            " (SELECT rowid AS rid, id, env_id, task_id, updated, total_reward, success, status, reason"
            f" FROM episodes WHERE {where} ORDER BY updated DESC, rowid DESC LIMIT ?) AS recent ORDER BY updated, rid",
            (*params, limit),
        )
        return [TimelineRow(episode_id=r[0], env_id=r[1], task_id=r[2], ended=r[3], total_reward=r[4],
                            success=None if r[5] is None else bool(r[5]), status=r[6], reason=r[7]) for r in rows]

    # --- the data loop: retirement and task metadata -------------------------------------------
    def retire_tasks(self, env_id: str, task_ids: list[str], reason: str | None) -> list[str]:
        """Mark tasks retired (samplers skip them); returns the ids that were not retired yet."""
        now = time.time()

        def op(tx: Tx) -> list[str]:
            return [task_id for task_id in task_ids if tx.execute(
                "INSERT INTO retired_tasks (env_id, task_id, reason, created) VALUES (?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                (env_id, task_id, reason, now),
            )]

        return list(self._transaction(op))

    def unretire_tasks(self, env_id: str, task_ids: list[str]) -> list[str]:
        """Undo ``retire_tasks``; returns the ids that were retired."""

        def op(tx: Tx) -> list[str]:
            return [task_id for task_id in task_ids if tx.execute(
                "DELETE FROM retired_tasks WHERE env_id=? AND task_id=?", (env_id, task_id)
            )]

        return list(self._transaction(op))

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
        text = json.dumps(metadata)
        return bool(self._transaction(
            lambda tx: tx.execute("UPDATE tasks SET metadata=? WHERE env_id=? AND id=?", (text, env_id, task_id))
        ))
