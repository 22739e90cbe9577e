"""The store's writer thread on a real database (a SQLite file and PostgreSQL, through the ``db``
fixture): concurrent writes share commits (group commit), each waiter gets its own outcome, a
failing write undoes only itself, every write is visible to another connection when its waiter
wakes, and stop commits what is queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from toolgym.errors import ShuttingDown
from toolgym.server.store import Store, open_store
from toolgym.server.writer import StoreWriter

ENV = "toolgym/ToolUse-v0"


def episode(store: Store, episode_id: str) -> Any:
    return store.episode_op(episode_id=episode_id, owner="k-owner", env_id=ENV, task_id="t1", split="train",
                            seed=None, options={}, reset_result={"observation": {}, "info": {}})


def step(store: Store, episode_id: str, turn: int) -> Any:
    result = {"observation": {"messages": []}, "reward": 1.0, "terminated": False, "truncated": False, "info": {}}
    return store.step_op(episode_id, turn, f"action-{turn}", result, mean_logprob=None, idempotency_key=None,
                         total_reward=float(turn + 1), status="live", reason=None)


@pytest.fixture
def store(db: str) -> Any:
    s = open_store(db)
    yield s
    s.close()


def test_concurrent_writes_share_commits_and_are_visible_on_wake(store: Store, db: str) -> None:
    groups: list[int] = []
    writer = StoreWriter(store, on_commit=lambda n, _s: groups.append(n))
    writer.start()
    other = open_store(db)  # another connection: another process, another replica

    async def play(i: int) -> None:
        await writer.write(episode(store, f"ep-{i}"))
        for turn in range(5):
            await writer.write(step(store, f"ep-{i}", turn))
            # Woken only after the commit: another connection already sees the step.
            assert [s["turn"] for s in other.steps(f"ep-{i}")][-1:] == [turn]

    async def main() -> None:
        await asyncio.gather(*(play(i) for i in range(50)))

    try:
        asyncio.run(main())
    finally:
        writer.stop()
        other.close()
    assert sum(groups) == writer.writes == 50 * 6
    assert writer.commits == len(groups) < 50 * 6, "concurrent writes must share commits"
    assert max(groups) > 1
    row = store.get_episode("ep-7")
    assert row is not None and row.turn == 5 and row.total_reward == 5.0


def test_a_failing_write_undoes_only_itself(store: Store) -> None:
    writer = StoreWriter(store)
    writer.start()

    async def main() -> list[Any]:
        await writer.write(episode(store, "ep-1"))
        await writer.write(step(store, "ep-1", 0))
        # Queued together: one good step, one duplicate turn, another good step.
        return list(await asyncio.gather(
            writer.write(step(store, "ep-1", 1)), writer.write(step(store, "ep-1", 0)),
            writer.write(episode(store, "ep-2")), return_exceptions=True,
        ))

    try:
        outcomes = asyncio.run(main())
    finally:
        writer.stop()
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], store.integrity_error)
    assert [s["action"] for s in store.steps("ep-1")] == ["action-0", "action-1"]
    assert store.get_episode("ep-2") is not None


def test_stop_commits_what_is_queued_then_refuses(store: Store) -> None:
    writer = StoreWriter(store)
    writer.start()

    async def main() -> None:
        pending = [asyncio.ensure_future(writer.write(episode(store, f"ep-{i}"))) for i in range(20)]
        await asyncio.sleep(0)  # all queued
        await asyncio.to_thread(writer.stop)
        await asyncio.gather(*pending)
        with pytest.raises(ShuttingDown):
            await writer.write(episode(store, "ep-late"))

    asyncio.run(main())
    assert store.list_episodes("k-owner", status=None, offset=0, limit=100)[1] == 20
