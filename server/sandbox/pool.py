"""A warm pool: sandboxes started ahead of resets, so a reset does not wait for container
start-up (a quarter of a second with Docker here). It hides creation latency, not creation
rate: Docker makes ~3-4 hardened containers/s on 2 cores, whatever the thread count.

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
import threading
import uuid
from collections import deque
from collections.abc import Callable

from toolgym.errors import SandboxError
from toolgym.server.sandbox.base import Sandbox, SandboxBackend, SandboxSpec

__all__ = ["LABEL_EPISODE", "LABEL_OWNER", "WARM_POOL_OWNER", "SandboxPool", "new_episode_id"]

log = logging.getLogger(__name__)

LABEL_EPISODE = "toolgym.episode"
LABEL_OWNER = "toolgym.owner"
WARM_POOL_OWNER = "warm-pool"
"""The owner label of sandboxes made ahead of any reset (no owner id ever has this form)."""


def new_episode_id(replica: str) -> str:
    """Episode ids name their replica, so a fleet client knows where an episode lives."""
    return f"ep-{replica}-{uuid.uuid4().hex[:20]}"


class SandboxPool:
    """Keeps ``size`` sandboxes ready; ``acquire`` takes one or makes one on demand."""

    def __init__(
        self,
        backend: SandboxBackend,
        spec_for: Callable[[dict[str, str]], SandboxSpec],
        *,
        size: int,
        replica: str,
    ) -> None:
        self._backend = backend
        self._spec_for = spec_for
        self._size = size
        self._replica = replica
        self._ready: deque[tuple[str, Sandbox]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.created = 0

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def size(self) -> int:
        return self._size

    def start(self) -> None:
        if self._size > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._fill, name="toolgym-warm-pool", daemon=True)
            self._thread.start()

    def _make(self, episode_id: str, owner: str) -> Sandbox:
        sandbox = self._backend.create(self._spec_for({LABEL_EPISODE: episode_id, LABEL_OWNER: owner}))
        self.created += 1
        return sandbox

    def _fill(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                while not self._stopping and len(self._ready) >= self._size:
                    self._cond.wait()
                if self._stopping:
                    return
            episode_id = new_episode_id(self._replica)
            try:
                sandbox = self._make(episode_id, WARM_POOL_OWNER)
            except SandboxError as exc:
                self.last_error = exc.message
                log.warning("warm pool: %s (retrying in %.1f s)", exc.message, backoff)
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            self.last_error = None
            with self._cond:
                if self._stopping:
                    sandbox.close()
                    return
                self._ready.append((episode_id, sandbox))

    def acquire(self, owner: str) -> tuple[str, Sandbox]:
        """An ``(episode_id, sandbox)`` pair: a warm one that still answers, else a new one."""
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
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        while self._ready:
            _, sandbox = self._ready.popleft()
            sandbox.close()
