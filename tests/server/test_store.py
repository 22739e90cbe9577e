"""The store on a real database, SQLite file and PostgreSQL alike (the ``db`` fixture runs each
test on both): what a step writes is there before it returns, for another connection and after
a reopen; a failed write changes nothing; restart bookkeeping; episode ownership."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest

from toolgym.errors import DuplicateTask
from toolgym.server.store import NotHolder, Store, open_store
from toolgym.server.store_sqlite import SqliteStore


def add_episode(store: Store, episode_id: str, owner: str = "k-owner", task_id: str = "t1", **kw: Any) -> None:
    store.add_episode(episode_id=episode_id, owner=owner, env_id="toolgym/ToolUse-v0", task_id=task_id,
                      split="train", seed=kw.pop("seed", 7), options={"reward": "solve_f1", "split": "train"},
                      reset_result={"observation": {"messages": [{"role": "user", "content": "q"}]}, "info": {}},
                      **kw)


def result(reward: float, done: bool = False) -> dict[str, Any]:
    return {"observation": {"messages": []}, "reward": reward, "terminated": done, "truncated": False,
            "info": {"status": "ok", "reason": "answered"} if done else {"status": "ok"}}


def raw(db: str, sql: str) -> None:
    """One statement on a connection of its own (another process's write, a test's tweak)."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as pg:
            pg.execute(sql)
        return
    with sqlite3.connect(db) as conn:
        conn.execute(sql)


def test_open_store_picks_the_dialect(db: str) -> None:
    store = open_store(db)
    try:
        assert type(store).__name__ == ("PgStore" if db.startswith("postgresql://") else "SqliteStore")
    finally:
        store.close()


def test_steps_are_durable_and_visible_to_another_connection(db: str) -> None:
    store = open_store(db)
    try:
        add_episode(store, "ep-1", seed=2**40)
        store.add_step("ep-1", 0, "<tool_call>{}</tool_call>", result(1.0), mean_logprob=-0.5,
                       idempotency_key="k0", total_reward=1.0, status="live", reason=None)
        store.add_step("ep-1", 1, {"content": "done", "tool_calls": []}, result(0.5, True), mean_logprob=None,
                       idempotency_key=None, total_reward=1.5, status="finished", reason="answered", success=True)
        # Another connection (another process, a restarted server) sees both at once.
        reader = open_store(db)
        try:
            row = reader.get_episode("ep-1")
            assert row is not None
            assert (row.status, row.reason, row.turn, row.total_reward) == ("finished", "answered", 2, 1.5)
            assert row.seed == 2**40 and row.options == {"reward": "solve_f1", "split": "train"}
            steps = reader.steps("ep-1")
            assert [s["turn"] for s in steps] == [0, 1]
            assert steps[0]["action"] == "<tool_call>{}</tool_call>" and steps[0]["mean_logprob"] == -0.5
            assert steps[1]["action"] == {"content": "done", "tool_calls": []}
            assert steps[1]["reward"] == 0.5 and steps[1]["info"]["reason"] == "answered"
        finally:
            reader.close()
        if isinstance(store, SqliteStore):
            mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
            assert mode == "wal"
    finally:
        store.close()
    reopened = open_store(db)
    try:
        assert reopened.get_episode("ep-1").turn == 2  # type: ignore[union-attr]
        assert reopened.get_episode("ep-unknown") is None
    finally:
        reopened.close()


def test_a_failed_step_write_changes_nothing(db: str) -> None:
    store = open_store(db)
    try:
        add_episode(store, "ep-1")
        store.add_step("ep-1", 0, "a", result(1.0), mean_logprob=None, idempotency_key=None, total_reward=1.0,
                       status="live", reason=None)
        with pytest.raises(store.integrity_error):
            store.add_step("ep-1", 0, "b", result(0.0, True), mean_logprob=None, idempotency_key=None,
                           total_reward=1.0, status="finished", reason="answered")
        row = store.get_episode("ep-1")
        assert row is not None and (row.status, row.turn, row.reason) == ("live", 1, None)
        assert [s["action"] for s in store.steps("ep-1")] == ["a"]
        # The store still writes after the failure (the transaction was rolled back).
        store.add_step("ep-1", 1, "c", result(0.0), mean_logprob=None, idempotency_key=None, total_reward=1.0,
                       status="live", reason=None)
        assert store.get_episode("ep-1").turn == 2  # type: ignore[union-attr]
        with pytest.raises(store.integrity_error):
            add_episode(store, "ep-1")
    finally:
        store.close()


def test_restart_bookkeeping(db: str) -> None:
    store = open_store(db)
    try:
        add_episode(store, "ep-live")
        add_episode(store, "ep-closed")
        add_episode(store, "ep-done")
        store.add_step("ep-done", 0, "x", result(1.0, True), mean_logprob=None, idempotency_key=None,
                       total_reward=1.0, status="finished", reason="answered", success=True)
        store.finish_episode("ep-closed", "finished", "idle_timeout")
        store.finish_episode("ep-done", "finished", "closed")  # already finished: unchanged
        assert store.get_episode("ep-done").reason == "answered"  # type: ignore[union-attr]
        assert store.get_episode("ep-closed").reason == "idle_timeout"  # type: ignore[union-attr]
        assert store.interrupt_live() == 1
        assert store.interrupt_live() == 0
        assert store.get_episode("ep-live").status == "interrupted"  # type: ignore[union-attr]
        assert store.get_episode("ep-done").status == "finished"  # type: ignore[union-attr]
    finally:
        store.close()


def test_only_idle_live_episodes_of_a_crashed_run_are_interrupted(db: str) -> None:
    """A crashed run's recent live episodes stay live (to be resumed); idle or held ones are told apart."""
    store = open_store(db)
    try:
        for name in ("ep-idle", "ep-recent", "ep-held"):
            add_episode(store, name)
        store.add_step("ep-recent", 0, "x", result(0.5), mean_logprob=None, idempotency_key="k0",
                       total_reward=0.5, status="live", reason=None)
        store.add_step("ep-recent", 1, "y", result(0.0), mean_logprob=None, idempotency_key=None,
                       total_reward=0.5, status="live", reason=None)
        raw(db, "UPDATE episodes SET updated=updated-1000 WHERE id IN ('ep-idle', 'ep-held')")
        assert store.interrupt_live(before=time.time() - 600, keep=frozenset({"ep-held"})) == 1
        statuses = {e: store.get_episode(e).status for e in ("ep-idle", "ep-recent", "ep-held")}  # type: ignore[union-attr]
        assert statuses == {"ep-idle": "interrupted", "ep-recent": "live", "ep-held": "live"}
        assert store.idempotency_keys("ep-recent") == {"k0": 0}
        assert store.idempotency_keys("ep-idle") == {}
    finally:
        store.close()


def test_a_live_replicas_episodes_are_never_interrupted_nor_claimed(db: str) -> None:
    """This process's replica is alive on either database: its idle episodes are not an orphan's."""
    store = open_store(db)
    try:
        store.register_replica("r-self")
        add_episode(store, "ep-mine", holder="r-self")
        add_episode(store, "ep-orphan", holder="r-gone")
        raw(db, "UPDATE episodes SET updated=updated-1000")
        assert store.interrupt_live(before=time.time() - 600) == 1
        assert store.get_episode("ep-mine").status == "live"  # type: ignore[union-attr]
        assert store.get_episode("ep-orphan").status == "interrupted"  # type: ignore[union-attr]
        add_episode(store, "ep-orphan-2", holder="r-gone")
        claim = store._transaction(store.claim_op("ep-orphan-2", "r-self"))
        assert (claim.claimed, claim.live, claim.holder) == (True, True, "r-self")
        assert store.get_episode("ep-orphan-2").holder == "r-self"  # type: ignore[union-attr]
        claim = store._transaction(store.claim_op("ep-orphan", "r-self"))  # interrupted: nothing to claim
        assert (claim.claimed, claim.live) == (False, False)
    finally:
        store.close()


def test_listing_is_per_owner_and_paged(db: str) -> None:
    store = open_store(db)
    try:
        for i in range(5):
            add_episode(store, f"ep-a{i}", owner="k-a")
        add_episode(store, "ep-b0", owner="k-b")
        store.finish_episode("ep-a1", "finished", "closed")
        rows, total = store.list_episodes("k-a", status=None, offset=0, limit=3)
        assert total == 5 and [r.id for r in rows] == ["ep-a0", "ep-a1", "ep-a2"]
        rows, total = store.list_episodes("k-a", status=None, offset=3, limit=3)
        assert [r.id for r in rows] == ["ep-a3", "ep-a4"]
        rows, total = store.list_episodes("k-a", status="finished", offset=0, limit=10)
        assert total == 1 and [r.id for r in rows] == ["ep-a1"]
        rows, total = store.list_episodes("k-b", status=None, offset=0, limit=10)
        assert total == 1 and rows[0].owner == "k-b"
        assert store.list_episodes("k-nobody", status=None, offset=0, limit=10) == ([], 0)
    finally:
        store.close()


def test_tasks_are_added_all_or_nothing(db: str) -> None:
    store = open_store(db)
    try:
        store.add_tasks("env/A-v0", [("t1", "train", {"q": 1}, {"m": 1}), ("t2", "test", {"q": 2}, {})])
        with pytest.raises(DuplicateTask):  # t1 stored with another record: nothing is added
            store.add_tasks("env/A-v0", [("t3", "train", {}, {}), ("t1", "train", {}, {})])
        with pytest.raises(DuplicateTask):  # the same record in another split is another task
            store.add_tasks("env/A-v0", [("t2", "train", {"q": 2}, {})])
        # The same task again (another replica sharing the database registered it first): kept as stored.
        store.add_tasks("env/A-v0", [("t2", "test", {"q": 2}, {"other": "metadata"})])
        store.add_tasks("env/B-v0", [("t1", "validation", {"other": True}, {})])  # ids are per env
        assert store.set_task_metadata("env/A-v0", "t2", {"new": 1})
        assert not store.set_task_metadata("env/A-v0", "t9", {})
    finally:
        store.close()
    reopened = open_store(db)
    try:
        assert list(reopened.iter_tasks()) == [
            ("env/A-v0", "t1", "train", {"q": 1}, {"m": 1}),
            ("env/A-v0", "t2", "test", {"q": 2}, {"new": 1}),
            ("env/B-v0", "t1", "validation", {"other": True}, {}),
        ]
    finally:
        reopened.close()


def test_retirement_is_idempotent_and_kept(db: str) -> None:
    store = open_store(db)
    try:
        assert store.retire_tasks("env/A-v0", ["t1", "t2"], "status=too_easy") == ["t1", "t2"]
        assert store.retire_tasks("env/A-v0", ["t2", "t3"], None) == ["t3"]
        assert store.unretire_tasks("env/A-v0", ["t1", "t9"]) == ["t1"]
        assert store.retired_ids("env/A-v0") == {"t2", "t3"}
        assert store.retired_pairs() == [("env/A-v0", "t2"), ("env/A-v0", "t3")]
    finally:
        store.close()


def test_task_stats_from_the_episodes_served(db: str) -> None:
    store = open_store(db)
    try:
        for i, (reward, success) in enumerate([(1.0, True), (0.25, False)]):
            add_episode(store, f"ep-{i}", task_id="t1")
            store.add_step(f"ep-{i}", 0, "x", result(reward, True), mean_logprob=-1.0 - i, idempotency_key=None,
                           total_reward=reward, status="finished", reason="answered", success=success)
        add_episode(store, "ep-open", task_id="t1")
        add_episode(store, "ep-other", task_id="t2")
        (t1, t2) = store.task_stats("toolgym/ToolUse-v0")
        assert (t1.task_id, t1.episodes, t1.finished, t1.successes) == ("t1", 3, 2, 1)
        assert t1.mean_return == pytest.approx(0.625) and t1.mean_logprob == pytest.approx(-1.5)
        assert (t2.task_id, t2.episodes, t2.finished, t2.mean_return, t2.mean_logprob) == ("t2", 1, 0, 0.0, None)
        assert store.task_stats("toolgym/Nothing-v0") == []
    finally:
        store.close()


def test_close_is_idempotent(db: str) -> None:
    store = open_store(db)
    store.close()
    store.close()
    if isinstance(store, SqliteStore):
        closed: type[Exception] = sqlite3.ProgrammingError
    else:
        import psycopg

        closed = psycopg.OperationalError
    with pytest.raises(closed):
        store.get_episode("ep-1")


def test_an_in_memory_store_works_and_closes() -> None:
    store = open_store(":memory:")
    add_episode(store, "ep-1")
    assert store.get_episode("ep-1") is not None
    store.close()
    store.close()


def test_fenced_writes_of_a_replica_that_lost_the_episode_change_nothing(db: str) -> None:
    store = open_store(db)
    try:
        add_episode(store, "ep-1", holder="r-new")
        with pytest.raises(NotHolder):
            store._transaction(store.step_op("ep-1", 0, "stale", result(1.0), mean_logprob=None, idempotency_key=None,
                                             total_reward=1.0, status="live", reason=None, holder="r-old"))
        store._transaction(store.finish_op("ep-1", "interrupted", None, holder="r-old"))
        row = store.get_episode("ep-1")
        assert row is not None and (row.status, row.turn, row.holder) == ("live", 0, "r-new")
        assert store.steps("ep-1") == []
        # The holder's own fenced writes go through.
        store._transaction(store.step_op("ep-1", 0, "mine", result(1.0), mean_logprob=None, idempotency_key=None,
                                         total_reward=1.0, status="live", reason=None, holder="r-new"))
        store._transaction(store.finish_op("ep-1", "finished", "closed", holder="r-new"))
        row = store.get_episode("ep-1")
        assert row is not None and (row.status, row.turn) == ("finished", 1)
        assert [s["action"] for s in store.steps("ep-1")] == ["mine"]
    finally:
        store.close()


def test_the_timeline_is_the_last_ended_episodes_oldest_first(db: str) -> None:
    store = open_store(db)
    try:
        for i in range(4):
            add_episode(store, f"ep-{i}", task_id=f"t{i}")
        add_episode(store, "ep-other", owner="k-other")
        add_episode(store, "ep-open")
        for i, (reward, success) in enumerate([(1.0, True), (0.0, False), (0.5, None)]):
            store.add_step(f"ep-{i}", 0, "x", result(reward, True), mean_logprob=None, idempotency_key=None,
                           total_reward=reward, status="finished", reason="answered", success=success)
        store.finish_episode("ep-3", "interrupted", None)
        store.finish_episode("ep-other", "finished", "closed")
        rows = store.timeline("k-owner", env_id=None, limit=3)
        assert [r.episode_id for r in rows] == ["ep-1", "ep-2", "ep-3"]
        assert [(r.total_reward, r.success, r.status) for r in rows] == [
            (0.0, False, "finished"), (0.5, None, "finished"), (0.0, None, "interrupted")]
        assert rows[0].ended <= rows[1].ended <= rows[2].ended
        assert store.timeline("k-owner", env_id="toolgym/Nothing-v0", limit=10) == []
    finally:
        store.close()
