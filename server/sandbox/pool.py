"""A warm pool: sandboxes started ahead of resets, so a reset does not wait for container start-up.

Container start-up takes a quarter of a second with Docker here. The pool hides creation
latency, not creation rate: Docker makes ~3-4 hardened containers/s on 2 cores (5/s from one
thread, ~8/s from two on a quiet machine).

Sized by demand: the pool holds what resets will take while new sandboxes are being made,
``ceil(reset rate x creation time x 1.5)`` (Little's law with headroom; the rate over the
last 10 s, the creation time a moving average), never below ``size`` (the configured
floor, what an idle server keeps) nor above ``max_size``. With ``max_size == size`` it is a
fixed pool. At most ``fill_workers`` sandboxes are made at once (bounded parallelism: more
threads do not make Docker faster, they only take CPU from the steps), and a replacement is
started ``REFILL_DELAY_S`` after the reset that took a sandbox, not during it, unless the
pool is empty. Extra sandboxes when demand falls are removed by the fill threads.

Labels, and how they stay truthful. Docker labels cannot change after creation, and a warm
sandbox is made before anyone owns it. So:

- ``toolgym.episode`` names an episode id chosen at creation; a warm sandbox keeps that id
  when a reset takes it, so the label is right for the sandbox's whole life;
- ``toolgym.owner`` says who the sandbox was *made for*: the owner id for one made on demand
  (or as a replacement), and ``warm-pool`` (``WARM_POOL_OWNER``) for one made ahead of time.
  It never claims an owner it cannot know, and never goes stale;
- the store is the authority on ownership: an episode's row says who owns it; find the
  owner of a ``warm-pool`` container by its episode label. The labels serve the operator
  (``docker ps --filter``) and the start-up sweep, which goes by ``toolgym.instance`` alone
  and removes every container of this instance, owned or not.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from toolgym.errors import SandboxError
from toolgym.server.sandbox.base import Sandbox, SandboxBackend, SandboxSpec

__all__ = ["LABEL_EPISODE", "LABEL_OWNER", "WARM_POOL_OWNER", "PoolStatus", "SandboxPool", "new_episode_id"]

log = logging.getLogger(__name__)

LABEL_EPISODE = "toolgym.episode"
LABEL_OWNER = "toolgym.owner"
WARM_POOL_OWNER = "warm-pool"
"""The owner label of sandboxes made ahead of any reset (no owner id ever has this form)."""


DEMAND_WINDOW_S = 10.0
"""Resets over this many seconds make the demand rate (short enough to follow a burst)."""
HEADROOM = 1.5
REFILL_DELAY_S = 0.05
"""After a reset takes a sandbox, how long the fill threads wait before starting its replacement
(unless none is left ready). Making a container takes the GIL (the engine's HTTP client) and
the CPU (the engine, the new agent's boot) right when the reset is being answered: on 2 cores
that doubled a warm reset's p50 (4.6 -> 9.2 ms in ``bench/``). 50 ms is a fifth of a creation."""
WARM_CHECK_S = 30.0
"""How long a new warm sandbox's agent may take to answer its first ping (``_fill``)."""
MAX_BACKOFF_S = 5.0
"""The longest wait between failed creations: an engine back from a restart (or an image tag
restored) is seen within this, while a broken one is asked only every few seconds."""


@dataclass(frozen=True)
class PoolStatus:
    """The warm pool now, for ``/readyz`` and ``/metrics``.

    Attributes:
        ready: sandboxes ready to hand out.
        size: the floor (``warm_pool_size``).
        max_size: the ceiling (``warm_pool_max``, or ``size``).
        target: what the pool aims at now, from demand.
        creating: sandboxes being made for the pool.
        resets_per_s: acquisitions per second over the demand window.
        create_s: moving average of one sandbox's creation time (None before the first).
        last_error: the last creation error, None once one succeeds again.
    """

    ready: int
    size: int
    max_size: int
    target: int
    creating: int
    resets_per_s: float
    create_s: float | None
    last_error: str | None


def new_episode_id(replica: str) -> str:
    """Episode ids name their replica, so a fleet client knows where an episode lives."""
    return f"ep-{replica}-{uuid.uuid4().hex[:20]}"


class SandboxPool:
    """Keeps between ``size`` and ``max_size`` sandboxes ready, as demand asks.

    ``acquire`` takes a ready one that still answers, or makes one when none is ready.
    """

    def __init__(
        self,
        backend: SandboxBackend,
        spec_for: Callable[[dict[str, str]], SandboxSpec],
        *,
        size: int,
        replica: str,
        max_size: int | None = None,
        fill_workers: int = 2,
        window_s: float = DEMAND_WINDOW_S,
        refill_delay_s: float = REFILL_DELAY_S,
    ) -> None:
        self._backend = backend
        self._spec_for = spec_for
        self._size = size
        self._max = max(size, max_size or size)
        self._fill_workers = max(1, min(fill_workers, self._max))
        self._replica = replica
        self._ready: deque[tuple[str, Sandbox]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._creating = 0
        self._window_s = window_s
        self._acquired: deque[float] = deque()
        self._refill_delay_s = refill_delay_s
        self._last_acquire = -math.inf
        self._create_s: float | None = None
        self.last_error: str | None = None
        self.created = 0

    @property
    def ready(self) -> int:
        """Sandboxes ready to hand out."""
        return len(self._ready)

    @property
    def size(self) -> int:
        """The floor: what the pool keeps when no reset comes."""
        return self._size

    def _rate(self, now: float) -> float:
        while self._acquired and self._acquired[0] < now - self._window_s:
            self._acquired.popleft()
        return len(self._acquired) / self._window_s

    def _target(self, now: float) -> int:
        if self._max == self._size or self._create_s is None:
            return self._size
        want = math.ceil(self._rate(now) * self._create_s * HEADROOM)
        return max(self._size, min(self._max, want))

    @property
    def target(self) -> int:
        """How many ready sandboxes the pool aims at now."""
        with self._cond:
            return self._target(time.monotonic())

    def status(self) -> PoolStatus:
        """A snapshot for ``/readyz`` and ``/metrics``."""
        with self._cond:
            now = time.monotonic()
            return PoolStatus(
                ready=len(self._ready), size=self._size, max_size=self._max, target=self._target(now),
                creating=self._creating, resets_per_s=round(self._rate(now), 3),
                create_s=None if self._create_s is None else round(self._create_s, 3), last_error=self.last_error,
            )

    def start(self) -> None:
        """Start the fill threads (idempotent; none for a pool of size 0 with no room to grow)."""
        if self._max > 0 and not self._threads:
            for i in range(self._fill_workers):
                thread = threading.Thread(target=self._fill, name=f"toolgym-warm-pool-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _make(self, episode_id: str, owner: str) -> Sandbox:
        started = time.monotonic()
        sandbox = self._backend.create(self._spec_for({LABEL_EPISODE: episode_id, LABEL_OWNER: owner}))
        took = time.monotonic() - started
        with self._cond:
            self._create_s = took if self._create_s is None else 0.8 * self._create_s + 0.2 * took
            self.created += 1
        return sandbox

    def _next_job(self) -> str | tuple[str, Sandbox]:
        """Wait until there is work: ``"make"``, ``"stop"``, or a ready sandbox to remove (demand fell).

        Re-checked every second, as demand decays with time alone.
        """
        with self._cond:
            while True:
                if self._stopping:
                    return "stop"
                now = time.monotonic()
                target = self._target(now)
                if len(self._ready) + self._creating < target:
                    quiet = self._last_acquire + self._refill_delay_s - now
                    if quiet > 0 and self._ready:  # let the reset that took one answer first
                        self._cond.wait(timeout=quiet)
                        continue
                    self._creating += 1
                    return "make"
                if len(self._ready) > target:
                    return self._ready.pop()
                self._cond.wait(timeout=1.0)

    def _fill(self) -> None:
        backoff = 0.5
        while True:
            job = self._next_job()
            if job == "stop":
                return
            if isinstance(job, tuple):
                job[1].close()
                continue
            episode_id = new_episode_id(self._replica)
            try:
                sandbox = self._make(episode_id, WARM_POOL_OWNER)
                # The agent says hello before it imports its warm modules and forks its first
                # standby (some 20 ms): a ping answered means it is done, so a reset that takes
                # this sandbox does not wait for that, and its own ping finds the path warm.
                if not sandbox.ping(WARM_CHECK_S):
                    sandbox.close()
                    raise SandboxError(f"a new warm sandbox did not answer a ping within {WARM_CHECK_S:g} s")
            except SandboxError as exc:
                with self._cond:
                    self._creating -= 1
                    self.last_error = exc.message
                log.warning("warm pool: %s (retrying in %.1f s)", exc.message, backoff)
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.5
            with self._cond:
                self._creating -= 1
                self.last_error = None
                if not self._stopping:
                    self._ready.append((episode_id, sandbox))
                    continue
            sandbox.close()
            return

    def acquire(self, owner: str) -> tuple[str, Sandbox]:
        """An ``(episode_id, sandbox)`` pair: a warm one that still answers, else a new one."""
        with self._cond:
            self._last_acquire = time.monotonic()
            self._acquired.append(self._last_acquire)  # demand: counted whether or not one is ready
            self._cond.notify_all()
        while True:
            with self._cond:
                if not self._ready:
                    break
                episode_id, sandbox = self._ready.popleft()
                self._cond.notify_all()
            if sandbox.ping(2.0):
                return episode_id, sandbox
            log.warning("warm pool: discarding a sandbox that stopped answering")
            sandbox.close()
        episode_id = new_episode_id(self._replica)
        return episode_id, self._make(episode_id, owner)

    def replace(self, episode_id: str, owner: str) -> Sandbox:
        """A fresh sandbox for an existing episode (after its sandbox failed)."""
        return self._make(episode_id, owner)

    def stop(self) -> None:
        """Stop the fill threads and remove every ready sandbox."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)
        while self._ready:
            _, sandbox = self._ready.popleft()
            sandbox.close()
