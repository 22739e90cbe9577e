"""The warm pool on real process sandboxes: fixed at its size by default, it grows with the
reset rate (up to ``max_size``) after a burst of acquisitions, and shrinks back to its size
once the burst is over; it never holds more than its target."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from toolgym.server.sandbox.base import SandboxBackend, SandboxSpec
from toolgym.server.sandbox.pool import WARM_POOL_OWNER, SandboxPool
from toolgym.server.settings import Settings


def spec(labels: dict[str, str]) -> SandboxSpec:
    return SandboxSpec(labels=labels)


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_fixed_pool_fills_to_its_size(process_backend: SandboxBackend) -> None:
    pool = SandboxPool(process_backend, spec, size=2, replica="t0")
    pool.start()
    try:
        wait_until(lambda: pool.ready == 2, 30, "the pool to fill")
        status = pool.status()
        assert (status.size, status.max_size, status.target, status.last_error) == (2, 2, 2, None)
        assert status.create_s is not None and status.create_s > 0
        time.sleep(0.3)
        assert pool.ready == 2, "a fixed pool makes no more than its size"
    finally:
        pool.stop()
    assert pool.ready == 0


def test_the_pool_follows_demand_within_its_bounds(process_backend: SandboxBackend) -> None:
    pool = SandboxPool(process_backend, spec, size=1, max_size=4, replica="t1", window_s=2.0)
    pool.start()
    taken = []
    try:
        wait_until(lambda: pool.ready == 1, 30, "the pool to fill")
        assert pool.target == 1, "no demand yet: the floor"
        for _ in range(40):  # a burst of resets: ~20/s over the 2 s window
            taken.append(pool.acquire("k-owner")[1])
        burst = pool.status()
        assert burst.resets_per_s >= 5
        assert burst.create_s is not None
        want = burst.resets_per_s * burst.create_s * 1.5  # Little's law with headroom
        assert 1 <= burst.target <= 4 and abs(burst.target - max(1, min(4, math.ceil(want)))) <= 1
        if burst.target > 1:  # creation is slow enough here that the burst asks for more
            wait_until(lambda: pool.ready >= 2, 30, "the pool to grow")
        assert pool.ready + pool.status().creating <= 4
        # The burst is over: the rate decays out of the window, the pool shrinks to its floor.
        wait_until(lambda: pool.target == 1 and pool.ready == 1, 30, "the pool to shrink back")
    finally:
        pool.stop()
        for box in taken:
            box.close()


def test_warm_sandboxes_are_labelled_warm_pool(process_backend: SandboxBackend) -> None:
    labels: list[dict[str, str]] = []

    def recording_spec(given: dict[str, str]) -> SandboxSpec:
        labels.append(given)
        return SandboxSpec(labels=given)

    warm = SandboxPool(process_backend, recording_spec, size=1, replica="t2")
    warm.start()
    try:
        wait_until(lambda: warm.ready == 1, 30, "the pool to fill")
        episode_id, box = warm.acquire("k-owner")
        assert labels[0] == {"toolgym.episode": episode_id, "toolgym.owner": WARM_POOL_OWNER}
        box.close()
    finally:
        warm.stop()
    labels.clear()
    cold = SandboxPool(process_backend, recording_spec, size=0, replica="t3")
    episode_id, box = cold.acquire("k-owner")  # made on demand: labelled with its owner
    box.close()
    assert labels == [{"toolgym.episode": episode_id, "toolgym.owner": "k-owner"}]


def test_warm_pool_max_is_validated() -> None:
    Settings(warm_pool_size=2, warm_pool_max=8).validate()
    Settings(warm_pool_size=2, warm_pool_max=0).validate()  # 0: a fixed pool
    with pytest.raises(ValueError, match="warm_pool_max"):
        Settings(warm_pool_size=2, warm_pool_max=1).validate()
    with pytest.raises(ValueError, match="warm_pool_max"):
        Settings(max_live_episodes=4, warm_pool_max=5).validate()


def _children(pid: int) -> list[str]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return fh.read().split()


def test_a_warm_sandbox_is_ready_only_once_its_agent_is_warm(process_backend: SandboxBackend) -> None:
    """The agent says hello before its warm imports and its first standby fork; the pool lists a
    sandbox only after it answered a ping, so a reset never waits for that warm-up."""
    pool = SandboxPool(process_backend, spec, size=1, replica="t0")
    pool.start()
    try:
        deadline = time.monotonic() + 30
        while not pool.ready:  # look the moment it is listed
            assert time.monotonic() < deadline, "timed out waiting for the pool to fill"
            time.sleep(0.0005)
        _, sandbox = pool._ready[0]
        agent_pid = int(sandbox.hello["pid"])
        assert _children(agent_pid), "the agent's standby child is already forked when the pool lists it"
    finally:
        pool.stop()


def test_a_replacement_starts_after_the_reset_that_took_a_sandbox(process_backend: SandboxBackend) -> None:
    """Making a sandbox competes with the reset being answered (GIL, CPU): the pool waits
    ``refill_delay_s`` after an acquisition before replacing it, unless none is left ready."""
    pool = SandboxPool(process_backend, spec, size=2, replica="t0", refill_delay_s=0.6)
    pool.start()
    try:
        wait_until(lambda: pool.ready == 2, 30, "the pool to fill")
        _, taken = pool.acquire("someone")
        try:
            time.sleep(0.2)
            status = pool.status()
            assert (status.ready, status.creating) == (1, 0), "no replacement while the reset is answered"
            wait_until(lambda: pool.ready == 2, 30, "the replacement after the delay")
            _, second = pool.acquire("someone")
            _, third = pool.acquire("someone")  # the pool is empty now: refill at once
            try:
                time.sleep(0.2)
                assert pool.status().creating + pool.ready > 0, "an empty pool refills without the delay"
            finally:
                second.close()
                third.close()
        finally:
            taken.close()
    finally:
        pool.stop()
