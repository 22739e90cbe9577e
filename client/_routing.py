"""Where a fleet client sends each call, without I/O.

Shared by ``FleetClient`` and ``AsyncFleetClient``, which only move bytes and sleep (as
``_core.Exchange`` is for one server). An episode lives in one server's memory and sandbox, so
every call on it must go back to the server that created it. Episode ids name their replica
(``ep-<replica>-<random>``, see ``toolgym.server.sandbox.pool.new_episode_id``); the replica
token is random per server process, so it says nothing of an address by itself. ``Routing``
learns it: each reset or fork answered by server *i* teaches ``replica -> i``, and every later
call on any episode of that replica goes to *i*. A server restarted at the same address is a new
replica; on the same database it still answers its old ids (an episode a crash left live is
rebuilt by replay, docs/architecture.md "Storage"), else an old id sent there gets
``EpisodeNotFound``, never another episode's state.

Resets are spread: the server with the fewest episodes this client holds open there goes first
(ties in turn, round robin). A server that refuses (503) or does not answer is skipped for its
``Retry-After`` and the reset goes on to the next; when every server has refused, the round is
retried after the backoff of ``RetryPolicy``, so failover is immediate and backing off is for a
fleet that is full as a whole.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from toolgym.client._core import ResetResult, Retry, RetryPolicy, StepResult
from toolgym.errors import EpisodeLost, EpisodeNotFound, ToolGymError, Unavailable

__all__ = ["NO_RETRY", "ResetPlan", "Routing", "replica_of"]

NO_RETRY = RetryPolicy(max_retries=0)
"""One attempt per server for a reset: a refusal fails over to another server at once."""

_EPISODE_ID = re.compile(r"ep-(?P<replica>[A-Za-z0-9-]+)-[0-9a-f]{20}")


def replica_of(episode_id: str) -> str | None:
    """The replica token an episode id names, or None for an id of another shape."""
    match = _EPISODE_ID.fullmatch(episode_id)
    return match.group("replica") if match else None


@dataclass
class _Server:
    base_url: str
    open_episodes: int = 0
    """Episodes this client opened here and has not seen end."""
    cool_until: float = 0.0
    """Until then resets try this server last (it refused, or did not answer)."""


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server cannot be reached at all.

    Its ``Unavailable`` then comes from a failed connection (after the retry policy's
    attempts), as opposed to a 503 the server sent, or a read timeout: a slow tool on a live
    server is not a lost episode.
    """
    return isinstance(exc, Unavailable) and isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)


class Routing:
    """The fleet's routing table.

    Which server holds which replica, each server's load, and which replicas were lost with
    their server.
    """

    def __init__(self, base_urls: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        urls = list(dict.fromkeys(url.rstrip("/") for url in base_urls))
        if not urls:
            raise ValueError("a fleet needs at least one base URL")
        self.servers = [_Server(url) for url in urls]
        self._clock = clock
        self._replicas: dict[str, int] = {}
        self._episodes: dict[str, int] = {}
        self._lost: dict[str, str] = {}
        self._turn = 0
        # FleetClient is shared between threads; the table's updates must not interleave.
        self._lock = threading.RLock()

    # --- resets ---------------------------------------------------------------------------------
    def reset_order(self) -> list[int]:
        """Server indices in the order a reset tries them.

        Those not cooling down first, the least loaded first among them, ties taken in turn.
        """
        with self._lock:
            now, n = self._clock(), len(self.servers)
            start = self._turn
            self._turn = (self._turn + 1) % n
            rotation = [(start + k) % n for k in range(n)]
            return sorted(rotation, key=lambda i: (self.servers[i].cool_until > now, self.servers[i].open_episodes))

    def refused(self, index: int, exc: Unavailable) -> None:
        """Server ``index`` refused a reset or did not answer: try it last for a while."""
        with self._lock:
            wait = getattr(exc, "retry_after_s", None) or 1.0
            self.servers[index].cool_until = self._clock() + float(wait)

    def opened(self, index: int, episode_id: str) -> None:
        """Server ``index`` answered a reset or fork with ``episode_id``: remember its replica."""
        with self._lock:
            replica = replica_of(episode_id)
            if replica is not None:
                self._replicas[replica] = index
                self._lost.pop(replica, None)
            self._episodes[episode_id] = index
            self.servers[index].open_episodes += 1
            self.servers[index].cool_until = 0.0

    def ended(self, episode_id: str) -> None:
        """The episode ended (closed, terminated or truncated): it no longer loads its server."""
        with self._lock:
            index = self._episodes.pop(episode_id, None)
            if index is not None:
                self.servers[index].open_episodes -= 1

    def stepped(self, episode_id: str, result: StepResult) -> StepResult:
        """Note an episode's end from a step result, and hand the result back."""
        if result.terminated or result.truncated:
            self.ended(episode_id)
        return result

    # --- calls on an episode --------------------------------------------------------------------
    def owner(self, episode_id: str) -> int:
        """The index of the server that holds ``episode_id``.

        Raises:
            EpisodeLost: that server was found down.
            EpisodeNotFound: no server of this fleet made the episode.
        """
        with self._lock:
            replica = replica_of(episode_id)
            if replica is not None and replica in self._lost:
                raise EpisodeLost(episode_id, self._lost[replica], "found down earlier")
            if episode_id in self._episodes:
                return self._episodes[episode_id]
            if replica is not None and replica in self._replicas:
                return self._replicas[replica]
            raise EpisodeNotFound(episode_id)

    def failed(self, episode_id: str, index: int, exc: ToolGymError) -> ToolGymError:
        """The error to raise for a call on ``episode_id`` that failed on server ``index``.

        An ``EpisodeLost`` when the server gave no answer (and every episode of its replica is
        then marked lost, so later calls fail at once instead of waiting out retries), else
        ``exc`` itself.
        """
        with self._lock:
            if not is_unreachable(exc):
                return exc
            url = self.servers[index].base_url
            replica = replica_of(episode_id)
            if replica is not None:
                self._lost[replica] = url
            self.ended(episode_id)
            self.servers[index].cool_until = self._clock() + 5.0
            return EpisodeLost(episode_id, url, exc.message)


class ResetPlan:
    """The failover loop of one reset, without I/O.

    ``next`` names the server to try (or a ``Retry`` to sleep on once every server has
    refused), ``failed`` takes a refusal, ``done`` records the answer. Errors that another
    server would answer alike (401, 404, 422) are raised at once.
    """

    def __init__(self, routing: Routing, policy: RetryPolicy) -> None:
        self.routing = routing
        self.policy = policy
        self.round = 0
        self._queue = routing.reset_order()
        self._refusals: list[tuple[str, Unavailable]] = []

    def next(self) -> int | Retry:
        """The next server index to send the reset to, or a ``Retry`` before a new round."""
        if self._queue:
            return self._queue.pop(0)
        if self.round >= self.policy.max_retries:
            detail = "; ".join(f"{url}: {exc.message}" for url, exc in self._refusals[-len(self.routing.servers):])
            last = self._refusals[-1][1]
            raise Unavailable(f"every ToolGym server refused the reset ({detail})",
                              retry_after_s=last.retry_after_s) from last
        floor = min(exc.retry_after_s for _, exc in self._refusals[-len(self.routing.servers):])
        delay = self.policy.delay(self.round, floor)
        self.round += 1
        self._queue = self.routing.reset_order()
        return Retry(delay)

    def failed(self, index: int, exc: ToolGymError) -> None:
        """Server ``index`` did not take the reset: move on if it was a refusal, else raise."""
        if not isinstance(exc, Unavailable):
            raise exc
        self.routing.refused(index, exc)
        self._refusals.append((self.routing.servers[index].base_url, exc))

    def done(self, index: int, result: ResetResult) -> ResetResult:
        """Server ``index`` answered: remember where the new episode lives."""
        self.routing.opened(index, result.episode_id)
        return result
