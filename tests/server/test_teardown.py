"""The background teardown on real process sandboxes: it removes what it is given, refuses
(rather than blocks) when its queue is full, reports its backlog, and ``drain`` leaves
nothing behind."""

from __future__ import annotations

import uuid

from toolgym.server.sandbox.base import Sandbox, SandboxBackend, SandboxSpec
from toolgym.server.sandbox.teardown import Teardown


def make(backend: SandboxBackend, n: int) -> list[Sandbox]:
    return [backend.create(SandboxSpec(labels={"toolgym.episode": f"td-{uuid.uuid4().hex[:8]}"})) for _ in range(n)]


def test_drain_removes_everything_submitted(process_backend: SandboxBackend) -> None:
    boxes = make(process_backend, 6)
    teardown = Teardown(workers=2, capacity=16)
    teardown.start()
    for box in boxes:
        assert teardown.submit(box)
    assert teardown.backlog >= 1  # removing a process sandbox takes far longer than six submits
    teardown.drain(timeout_s=60)
    assert teardown.backlog == 0
    status = teardown.status()
    assert (status.removed, status.failed, status.workers, status.capacity) == (6, 0, 2, 16)
    assert [box.close() for box in boxes] == [False] * 6, "each one is already gone"


def test_a_full_queue_refuses_instead_of_blocking(process_backend: SandboxBackend) -> None:
    boxes = make(process_backend, 4)
    teardown = Teardown(workers=1, capacity=1)
    teardown.start()
    try:
        taken = [teardown.submit(box) for box in boxes]
        # One is being removed (or queued), at most one more waits; the rest are refused and
        # stay the caller's to remove.
        assert taken[0] and not all(taken)
        assert 1 <= teardown.backlog <= sum(taken) <= 2
        for box, was_taken in zip(boxes, taken, strict=True):
            if not was_taken:
                assert box.close() is True
    finally:
        teardown.drain(timeout_s=60)
    assert teardown.backlog == 0
    assert all(box.close() is False for box in boxes)


def test_a_stopped_teardown_refuses(process_backend: SandboxBackend) -> None:
    teardown = Teardown(workers=1, capacity=4)
    (box,) = make(process_backend, 1)
    assert not teardown.submit(box), "not started: the caller removes it"
    teardown.start()
    teardown.drain(timeout_s=10)
    assert not teardown.submit(box), "drained: the caller removes it"
    assert box.close() is True
