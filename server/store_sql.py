"""What both store dialects share below the interface: the schema, the row types, and ``Tx``.

The SQL is written once, in the form SQLite and PostgreSQL both accept, with ``?``
placeholders; ``Tx`` hands it to the driver in the driver's placeholder style. The store's
queries live in ``toolgym.server.store``; its connections in ``store_sqlite`` and ``store_pg``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["COLS", "MIGRATIONS", "SCHEMA", "Claim", "EpisodeRow", "Outcome", "TaskStatsRow", "TimelineRow", "Tx",
           "WriteOp", "episode_row"]


class _Cursor(Protocol):
    rowcount: int

    def fetchall(self) -> list[Any]: ...


class _Connection(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...


class Tx:
    """A connection as the store's SQL sees it: ``?`` placeholders, whatever the driver's style.

    The SQL is written once, in the form both dialects accept; ``placeholder`` is what the
    driver wants instead of ``?`` (``%s`` for psycopg). The SQL holds no literal ``?`` or ``%``.
    """

    def __init__(self, conn: _Connection, placeholder: str = "?") -> None:
        self.conn = conn
        self._placeholder = placeholder
        self._cache: dict[str, str] = {}

    def _sql(self, sql: str) -> str:
        if self._placeholder == "?":
            return sql
        text = self._cache.get(sql)
        if text is None:
            text = self._cache[sql] = sql.replace("?", self._placeholder)
        return text

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        cursor: _Cursor = self.conn.execute(self._sql(sql), tuple(params))
        return int(cursor.rowcount)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query; its rows."""
        cursor: _Cursor = self.conn.execute(self._sql(sql), tuple(params))
        return [tuple(r) for r in cursor.fetchall()]


WriteOp = Callable[[Tx], Any]
"""One write: runs inside a transaction (and a savepoint) on the writer connection."""


@dataclass(frozen=True)
class Outcome:
    """What one operation of a group commit gave: its value, or the error that undid it."""

    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Claim:
    """What ``claim_op`` found: the episode is now the claimer's, or why not.

    ``holder`` names the live replica that holds it when ``claimed`` is False and ``live`` True.
    """

    claimed: bool
    live: bool
    holder: str | None = None


SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    {rowid}env_id TEXT NOT NULL, id TEXT NOT NULL, split TEXT NOT NULL,
    record TEXT NOT NULL, metadata TEXT NOT NULL, created {real} NOT NULL,
    PRIMARY KEY (env_id, id)
);
CREATE TABLE IF NOT EXISTS episodes (
    {rowid}id TEXT PRIMARY KEY, owner TEXT NOT NULL, env_id TEXT NOT NULL, task_id TEXT NOT NULL,
    split TEXT NOT NULL, seed {bigint}, options TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, turn INTEGER NOT NULL DEFAULT 0, total_reward {real} NOT NULL DEFAULT 0,
    success INTEGER, reset_result TEXT NOT NULL, parent_id TEXT, parent_turn INTEGER,
    created {real} NOT NULL, updated {real} NOT NULL, holder TEXT
);
CREATE INDEX IF NOT EXISTS episodes_owner ON episodes (owner, created);
CREATE INDEX IF NOT EXISTS episodes_task ON episodes (env_id, task_id);
CREATE INDEX IF NOT EXISTS episodes_status ON episodes (status, updated);
CREATE TABLE IF NOT EXISTS steps (
    episode_id TEXT NOT NULL, turn INTEGER NOT NULL, action TEXT NOT NULL,
    result TEXT NOT NULL, mean_logprob {real}, idempotency_key TEXT, created {real} NOT NULL,
    sample TEXT,
    PRIMARY KEY (episode_id, turn)
);
CREATE TABLE IF NOT EXISTS retired_tasks (
    {rowid}env_id TEXT NOT NULL, task_id TEXT NOT NULL, reason TEXT, created {real} NOT NULL,
    PRIMARY KEY (env_id, task_id)
);
"""
"""The tables of both dialects. ``{real}`` is a 64-bit float and ``{bigint}`` a 64-bit integer;
``{rowid}`` declares the insertion-order column that SQLite has implicitly (``rowid``), so
``ORDER BY created, rowid`` means the same on both."""


MIGRATIONS = (
    ("steps", "sample", "ALTER TABLE steps ADD COLUMN sample TEXT"),
    ("episodes", "holder", "ALTER TABLE episodes ADD COLUMN holder TEXT"),
)
"""Columns added after a database may have been made: (table, column, the statement that adds it).

``SCHEMA`` already has them, so only a database made by an older version runs a statement; each
is a plain ``ADD COLUMN`` of a nullable column (the same SQL in both dialects), so old rows read
as NULL.
"""


@dataclass(frozen=True)
class EpisodeRow:
    """One stored episode: task, options, progress as of its last committed step, the reset's answer.

    ``status`` is ``live``, ``finished`` or ``interrupted`` (left live by a run that stopped
    without closing it); ``created`` and ``updated`` are Unix times in seconds; ``holder`` is
    the replica that plays it (None for rows written before replicas were recorded).
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
    holder: str | None = None


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


COLS = ("id, owner, env_id, task_id, split, seed, options, status, reason, turn, total_reward,"
         " reset_result, parent_id, parent_turn, created, updated, holder")


def episode_row(r: tuple[Any, ...]) -> EpisodeRow:
    """An ``EpisodeRow`` from a row of ``SELECT {COLS} FROM episodes``."""
    return EpisodeRow(
        id=r[0], owner=r[1], env_id=r[2], task_id=r[3], split=r[4], seed=r[5], options=json.loads(r[6]),
        status=r[7], reason=r[8], turn=r[9], total_reward=r[10], reset_result=json.loads(r[11]),
        parent_id=r[12], parent_turn=r[13], created=r[14], updated=r[15], holder=r[16],
    )
