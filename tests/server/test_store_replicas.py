"""Several replicas on one database, a SQLite file and a real PostgreSQL cluster alike (the ``db``
fixture): each sees the others' trajectories, none takes another's live episode, and a replica's
episodes become claimable as soon as its process dies, ``kill -9`` included (its lock, a
PostgreSQL session lock or a lock file beside the SQLite file, goes with the process). Then the
PostgreSQL-only cases: a lease session cut while its process lives, sessions the database drops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pg_kit import terminate_lease

from toolgym.errors import StoreUnavailable
from toolgym.server.store import Claim, NotHolder, Store, open_store

ENV = "toolgym/FunctionCall-v0"


def add(store: Any, episode_id: str, holder: str) -> None:
    store.add_episode(episode_id=episode_id, owner="k-a", env_id=ENV, task_id="t1", split="train", seed=None,
                      options={}, reset_result={"observation": {}, "info": {}}, holder=holder)


def claim(store: Any, episode_id: str, replica: str) -> Claim:
    return store._transaction(store.claim_op(episode_id, replica))  # type: ignore[no-any-return]


def claim_once_free(store: Any, episode_id: str, replica: str, dead: str) -> Claim:
    """Claim until it succeeds: a dead replica's lock is dropped once its server process ends (bounded)."""
    deadline = time.monotonic() + 20
    while not (got := claim(store, episode_id, replica)).claimed:
        assert got.holder == dead, got
        assert time.monotonic() < deadline, f"{dead}'s lock was not released in 20 s"
        time.sleep(0.05)
    return got


@pytest.fixture
def pair(db: str) -> Iterator[tuple[Store, Store]]:
    """Two replicas on one database, ``r-a`` and ``r-b`` (closed at the end; a test may close one first)."""
    a, b = open_store(db), open_store(db)
    try:
        a.register_replica("r-a")
        b.register_replica("r-b")
        yield a, b
    finally:
        a.close()
        b.close()


def test_replicas_share_trajectories_and_never_take_a_live_ones_episodes(pair: tuple[Store, Store]) -> None:
    a, b = pair
    add(a, "ep-a", "r-a")
    a.add_step("ep-a", 0, "x", {"reward": 1.0}, mean_logprob=None, idempotency_key="k0", total_reward=1.0,
               status="live", reason=None)
    add(a, "ep-a-done", "r-a")
    a.add_step("ep-a-done", 0, "y", {"reward": 0.5}, mean_logprob=None, idempotency_key=None,
               total_reward=0.5, status="finished", reason="answered", success=False)
    # B reads A's trajectories as A wrote them.
    rows, total = b.list_episodes("k-a", status=None, offset=0, limit=10)
    assert total == 2 and [r.id for r in rows] == ["ep-a", "ep-a-done"]
    assert [s["action"] for s in b.steps("ep-a-done")] == ["y"]
    assert b.idempotency_keys("ep-a") == {"k0": 0}
    # A is alive: B neither interrupts (whatever the age) nor claims its live episode.
    assert b.interrupt_live() == 0
    assert claim(b, "ep-a", "r-b") == Claim(claimed=False, live=True, holder="r-a")
    assert b.get_episode("ep-a").holder == "r-a"  # type: ignore[union-attr]
    assert claim(a, "ep-a", "r-a").claimed  # its own holder may claim it again
    a.close()
    # A is gone (a clean stop): its live episode is an orphan B may take.
    assert claim_once_free(b, "ep-a", "r-b", "r-a") == Claim(claimed=True, live=True, holder="r-b")
    assert b.get_episode("ep-a").holder == "r-b"  # type: ignore[union-attr]


HOLDER = """
import sys, time
from toolgym.server.store import open_store
store = open_store(sys.argv[1])
store.register_replica("r-doomed")
store.add_episode(episode_id="ep-doomed", owner="k-a", env_id="x", task_id="t", split="train", seed=None,
                  options={}, reset_result={}, holder="r-doomed")
print("ready", flush=True)
time.sleep(120)
"""


def test_a_killed_replicas_episodes_become_claimable(db: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    survivor = open_store(db)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        survivor.register_replica("r-survivor")
        assert claim(survivor, "ep-doomed", "r-survivor").holder == "r-doomed"  # alive: not taken
        assert survivor.interrupt_live() == 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        claim_once_free(survivor, "ep-doomed", "r-survivor", "r-doomed")
        assert survivor.get_episode("ep-doomed").holder == "r-survivor"  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        survivor.close()


def test_of_two_replicas_claiming_one_orphan_exactly_one_wins(db: str) -> None:
    stores = [open_store(db) for _ in range(2)]
    try:
        for i, store in enumerate(stores):
            store.register_replica(f"r-{i}")
        orphans = [f"ep-orphan-{n}" for n in range(40)]
        for episode_id in orphans:
            add(stores[0], episode_id, "r-gone")
        won: dict[str, list[str]] = {e: [] for e in orphans}
        start = threading.Barrier(2)

        def take(i: int) -> None:
            start.wait(timeout=30)
            for episode_id in orphans:
                if claim(stores[i], episode_id, f"r-{i}").claimed:
                    won[episode_id].append(f"r-{i}")

        threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert all(len(w) == 1 for w in won.values()), {e: w for e, w in won.items() if len(w) != 1}
        for episode_id, (winner,) in won.items():
            assert stores[1].get_episode(episode_id).holder == winner  # type: ignore[union-attr]
    finally:
        for store in stores:
            store.close()


def test_a_replica_name_is_held_once(db: str) -> None:
    a, b = open_store(db), open_store(db)
    try:
        a.register_replica("r-same")
        with pytest.raises(RuntimeError, match="already live"):
            b.register_replica("r-same")
    finally:
        a.close()
        b.close()


def test_a_lost_lease_is_taken_again(pg_db: str) -> None:
    """PostgreSQL only: a lease session can be cut while its process lives (a file lock cannot)."""
    a, b = open_store(pg_db), open_store(pg_db)
    try:
        a.register_replica("r-a")
        b.register_replica("r-b")
        add(a, "ep-1", "r-a")
        add(a, "ep-2", "r-a")
        assert a.renew_replica()
        terminate_lease(pg_db, "r-a")
        # While A's lock is lost, its episodes are fair game: B takes one.
        claim_once_free(b, "ep-1", "r-b", "r-a")
        assert a.renew_replica()  # notices, and holds the lock again on a new session
        assert claim(b, "ep-2", "r-b") == Claim(claimed=False, live=True, holder="r-a")
        # A's fenced writes to the episode B took change nothing.
        with pytest.raises(NotHolder):
            a._transaction(a.step_op("ep-1", 0, "stale", {}, mean_logprob=None, idempotency_key=None,
                                     total_reward=0.0, status="live", reason=None, holder="r-a"))
        assert b.steps("ep-1") == []
    finally:
        a.close()
        b.close()


def test_a_url_without_psycopg_says_what_to_install() -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from toolgym.server.store import open_store\n"
            "open_store('postgresql://u:p@127.0.0.1:1/db')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "pip install 'toolgym[postgres]'" in done.stderr, done.stderr


def test_dropped_sessions_are_replaced_and_a_write_on_one_is_refused_not_lost(pg_db: str) -> None:
    """The database ends the store's sessions (a restart, a cut): one write and one read fail, then all works."""
    import psycopg

    store = open_store(pg_db)
    try:
        add(store, "ep-1", "r-a")
        with psycopg.connect(pg_db, autocommit=True) as admin:
            ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                  " WHERE application_name = 'toolgym' AND pid <> pg_backend_pid()").fetchall()
        assert ended == [(True,), (True,)], ended
        with pytest.raises(StoreUnavailable):
            add(store, "ep-2", "r-a")
        with pytest.raises(psycopg.OperationalError):
            store.get_episode("ep-1")
        add(store, "ep-2", "r-a")
        assert [r.id for r in store.list_episodes("k-a", status=None, offset=0, limit=10)[0]] == ["ep-1", "ep-2"]
    finally:
        store.close()
