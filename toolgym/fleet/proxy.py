"""The fleet's entry point: one address in front of N replicas, routing each call to its replica.

An episode lives in one replica's memory and sandbox, so the entry point spreads *resets* and
routes everything else: a call whose path names an episode (``/v1/episodes/<id>...``) goes to
the replica its id names (``ep-<replica>-<random>``, ``toolgym.client._routing.replica_of``);
a reset goes to the next live replica in turn, and on to the next when one refuses it (503)
or does not answer; any other call goes to a live replica in turn (task lists, env specs: the
replicas load the same task files). Request and answer bodies are read whole, then passed on
unchanged, headers (``Authorization`` included) too: the replicas check keys, not the entry point.

A replica is found dead when its port refuses a connection (nothing listens there any more),
when a call on it loses its connection and a new one finds no answer, when
``failures_to_dead`` health checks in a row fail, or when the watcher (Ray, for a fleet on Ray)
says its actor is gone. From then on a call for one of its episodes is answered at once with
``503 sandbox_error`` (retryable, the ``infra_error`` of a lost sandbox, so a GRPO trainer
masks the rollout), a call already in flight on it is answered so too the moment it is found
dead, and resets go elsewhere. Nothing waits on a dead replica. A replica is never brought
back: a new one is a new token. With one store for all replicas (``rebuild_lost``), the
episodes of a replica that is certainly *gone* (its port refuses, or Ray says so; a merely
silent one may wake up) go to a live replica instead, which rebuilds each by replay from the
store, as a server restarted on its database does; the call cut off by the loss answers a 503
the client sends again.

The ASGI app around it, and the routes the entry point answers itself, are in
``toolgym.fleet.entry_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from toolgym.client._routing import replica_of
from toolgym.errors import EpisodeNotFound, SandboxError, ToolGymError, Unavailable
from toolgym.fleet.placement import ReplicaInfo

__all__ = ["EPISODE_PATH", "EntryPoint", "Upstream"]

log = logging.getLogger("toolgym.fleet")

EPISODE_PATH = re.compile(r"/v1/episodes/(?P<id>[^/]+)(?:/.*)?")
"""The paths of calls on one episode (``/v1/episodes/<id>`` and below): routed by the id's replica."""
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-authorization", "proxy-authenticate", "content-length"})
_NOT_PASSED_BACK = _HOP_BY_HOP | {"content-encoding"}
"""An answer is passed back decoded (httpx undoes any compression), so its encoding header is dropped too."""

Watcher = Callable[[], Sequence[bool]]
"""Blocking: whether each replica (in order) is alive by its orchestrator's account (e.g. Ray's)."""


@dataclass
class Upstream:
    """One replica as the entry point sees it: its address, and whether it was found dead (and why)."""

    info: ReplicaInfo
    alive: bool = True
    reason: str = ""
    gone: bool = False
    """Its process is certainly gone (its port refuses, or Ray says its actor died), not merely
    silent: only then may another replica rebuild its episodes from a shared store, since a
    hung replica that wakes up would play them too."""
    failures: int = 0
    dead: asyncio.Event = field(default_factory=asyncio.Event)

    def lose(self, reason: str, *, gone: bool = False) -> None:
        """Mark the replica dead (once; ``gone`` may be learnt later): its in-flight calls are answered."""
        if gone and not self.gone:
            self.gone = True
            log.info("replica %s is gone for certain: %s", self.info.replica, reason)
        if not self.alive:
            return
        self.alive, self.reason = False, reason
        self.dead.set()
        log.error("replica %s (%s, pid %d) is lost: %s; its live episodes answer 503 sandbox_error",
                  self.info.replica, self.info.base_url, self.info.pid, reason)

    def describe(self) -> dict[str, Any]:
        """The replica's row in the entry point's ``/v1/version``."""
        row: dict[str, Any] = {"replica": self.info.replica, "base_url": self.info.base_url, "pid": self.info.pid,
                               "node_id": self.info.node_id, "node_ip": self.info.node_ip, "alive": self.alive}
        if not self.alive:
            row["reason"] = self.reason
        return row


class EntryPoint:
    """The routing state of the entry point: the replicas, their health, and whose turn a reset is.

    Args:
        replicas: the started replicas, as ``place_replicas`` reports them.
        watcher: asked every ``check_interval_s`` (in a thread) which replicas are alive; None
            to rely on HTTP health checks alone.
        check_interval_s: time between health checks of every replica.
        check_timeout_s: a ``/healthz`` slower than this counts as a failed check.
        failures_to_dead: failed checks in a row (not refusals: those are at once) before a
            replica is lost; a busy replica answers ``/healthz`` late, not never.
        call_timeout_s: bound on one proxied call on a live replica (a slow tool is not a death).
        max_request_bytes: a larger request body is refused (413) before it is held whole in
            memory; the replicas' own limit (``Settings.max_request_bytes``) is the one to match.
        rebuild_lost: the replicas share one store (``--db``), so an episode of a replica that
            is gone is sent to a live one, which rebuilds it by replay from the store (as a
            server restarted on its database does) instead of answering it lost.
    """

    def __init__(self, replicas: Sequence[ReplicaInfo], *, watcher: Watcher | None = None,
                 check_interval_s: float = 1.0, check_timeout_s: float = 2.0, failures_to_dead: int = 3,
                 call_timeout_s: float = 600.0, max_request_bytes: int = 8 * 1024 * 1024,
                 rebuild_lost: bool = False) -> None:
        if not replicas:
            raise ValueError("an entry point needs at least one replica")
        self.upstreams = [Upstream(info) for info in replicas]
        self._by_token = {u.info.replica: u for u in self.upstreams}
        self._turn = itertools.count()
        self._watcher = watcher
        self._interval = check_interval_s
        self._check_timeout = check_timeout_s
        self._failures_to_dead = failures_to_dead
        self._call_timeout = call_timeout_s
        self.max_request_bytes = max_request_bytes
        self.rebuild_lost = rebuild_lost
        self._adopted: dict[str, Upstream] = {}
        self._lock = threading.Lock()
        self.client: httpx.AsyncClient | None = None
        self.envs: list[str] = []
        """The env ids the replicas offer, as a replica last answered ``/v1/version``."""

    # --- choosing a replica ---------------------------------------------------------------------
    def in_turn(self) -> list[Upstream]:
        """The live replicas, starting with the one whose turn it is (round robin)."""
        live = [u for u in self.upstreams if u.alive]
        if not live:
            return []
        with self._lock:
            start = next(self._turn) % len(live)
        return live[start:] + live[:start]

    def owner(self, episode_id: str) -> Upstream:
        """The replica that holds ``episode_id``.

        With ``rebuild_lost``, the episode of a replica that is gone is another replica's: the
        same live one for every call on it, which rebuilds it from the shared store.

        Raises:
            EpisodeNotFound: no replica of this fleet makes ids of that shape or token.
            SandboxError: its replica is lost, so is the episode (retryable, as a lost sandbox).
        """
        token = replica_of(episode_id)
        upstream = self._by_token.get(token) if token is not None else None
        if upstream is None:
            raise EpisodeNotFound(episode_id)
        if upstream.alive:
            return upstream
        if not (self.rebuild_lost and upstream.gone):
            raise _lost(episode_id, upstream)
        adopter = self._adopted.get(episode_id)
        if adopter is None or not adopter.alive:
            live = [u for u in self.upstreams if u.alive]
            if not live:
                raise _lost(episode_id, upstream)
            adopter = live[zlib.crc32(episode_id.encode()) % len(live)]
            self._adopted[episode_id] = adopter
            log.info("episode %s of lost replica %s goes to replica %s (rebuilt from the shared store)",
                     episode_id, upstream.info.replica, adopter.info.replica)
        return adopter

    # --- health ---------------------------------------------------------------------------------
    async def check(self) -> None:
        """One round of checks: ``/healthz`` of every live replica and the watcher, side by side."""
        assert self.client is not None
        live = [u for u in self.upstreams if not u.gone]  # a lost replica may still be found gone
        watched = asyncio.ensure_future(asyncio.to_thread(self._watcher) if self._watcher is not None else _nothing())
        results = await asyncio.gather(*(self._check_one(u) for u in live))
        try:
            alive = await watched
        except Exception:  # the orchestrator did not answer this round; the HTTP checks still count
            log.warning("the replica watcher failed", exc_info=True)
            alive = None
        for upstream, failure in zip(live, results, strict=True):
            if failure is None:
                upstream.failures = 0
            elif failure.startswith("refused"):
                upstream.lose(failure, gone=True)
            else:
                upstream.failures += 1
                if upstream.failures >= self._failures_to_dead:
                    upstream.lose(f"{upstream.failures} health checks in a row failed ({failure})")
        if alive is not None:
            for upstream, ok in zip(self.upstreams, alive, strict=True):
                if not ok:
                    upstream.lose("its Ray actor is dead", gone=True)

    async def _check_one(self, upstream: Upstream) -> str | None:
        assert self.client is not None
        try:
            r = await self.client.get(f"{upstream.info.base_url}/healthz", timeout=self._check_timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return f"refused: {type(exc).__name__}" if isinstance(exc, httpx.ConnectError) else "connect timeout"
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return None if r.status_code == 200 else f"/healthz answered {r.status_code}"

    async def watch(self) -> None:
        """Check the replicas forever, every ``check_interval_s`` (a task of the app's lifespan)."""
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("a health check round failed")
            await asyncio.sleep(self._interval)

    # --- forwarding -----------------------------------------------------------------------------
    async def send(self, upstream: Upstream, request: Request, body: bytes,
                   episode_id: str | None = None) -> Response:
        """Send ``request`` to ``upstream`` and pass its answer back; a lost replica answers 503 at once.

        Raises:
            SandboxError: the replica was lost before or during the call.
            Unavailable: the call took longer than ``call_timeout_s``.
        """
        assert self.client is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        url = upstream.info.base_url + request.url.path
        outgoing = self.client.build_request(request.method, url, params=request.url.query or None,
                                             headers=headers, content=body, timeout=self._call_timeout)
        call = asyncio.ensure_future(self._exchange(outgoing))
        dead = asyncio.ensure_future(upstream.dead.wait())
        try:
            await asyncio.wait({call, dead}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dead.cancel()
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
            raise self._lost_call(episode_id, upstream)
        try:
            answer = call.result()
        except httpx.ConnectError as exc:  # nothing listens there any more
            upstream.lose(f"its port refused a call ({type(exc).__name__})", gone=True)
            raise self._lost_call(episode_id, upstream) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # A dropped connection is a dead process, or a kept-alive connection the replica
            # closed as we reused it: whether it still answers tells which.
            probe = await self._probe(upstream)
            if probe != "answers":
                upstream.lose(f"a call lost its connection ({type(exc).__name__}) and /healthz {probe}",
                              gone=probe == "refuses")
                raise self._lost_call(episode_id, upstream) from exc
            raise Unavailable(f"the connection to replica {upstream.info.replica} dropped during the call"
                              f" ({type(exc).__name__}); it still answers: retry", retry_after_s=1.0,
                              replica=upstream.info.replica) from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"replica {upstream.info.replica} did not answer within {self._call_timeout:g} s",
                              retry_after_s=5.0, replica=upstream.info.replica) from exc
        status, out_headers, content = answer
        return Response(content, status_code=status, headers=out_headers)

    async def _probe(self, upstream: Upstream) -> str:
        """``upstream``'s ``/healthz`` on a new connection now: ``answers``, ``refuses`` or ``is silent``.

        A new one: a pooled connection to a process that just died fails like the call did, and
        so would say nothing of whether the process is still there.
        """
        try:
            async with httpx.AsyncClient(timeout=self._check_timeout) as fresh:
                r = await fresh.get(f"{upstream.info.base_url}/healthz")
        except httpx.ConnectError:
            return "refuses"
        except httpx.HTTPError:
            return "is silent"
        return "answers" if r.status_code == 200 else "is silent"

    def _lost_call(self, episode_id: str | None, upstream: Upstream) -> SandboxError:
        """The error for a call its replica was lost under: a retry rebuilds the episode if it can."""
        if episode_id is not None and self.rebuild_lost and upstream.gone:
            return SandboxError(f"replica {upstream.info.replica} was lost during this call on episode"
                                f" {episode_id!r} ({upstream.reason}); send it again: another replica rebuilds"
                                " the episode from the shared store", retry_after_s=0.5,
                                replica=upstream.info.replica, episode_id=episode_id, episode_lost=False)
        return _lost(episode_id, upstream)

    async def _exchange(self, outgoing: httpx.Request) -> tuple[int, dict[str, str], bytes]:
        assert self.client is not None
        r = await self.client.send(outgoing)
        content = await r.aread()
        headers = {k: v for k, v in r.headers.items() if k.lower() not in _NOT_PASSED_BACK}
        return r.status_code, headers, content

    async def reset(self, request: Request, body: bytes) -> Response:
        """A reset: each live replica in turn until one takes it (a 503 or a lost replica moves on).

        When every replica refused, the last refusal is passed back as it came (its
        ``Retry-After`` included); when none could be reached, a 503 says so.
        """
        last: ToolGymError = Unavailable("no replica of this fleet is alive", retry_after_s=5.0)
        refusal: Response | None = None
        for upstream in self.in_turn():
            try:
                response = await self.send(upstream, request, body)
            except Unavailable as exc:  # lost (SandboxError) or too slow
                last = exc
                continue
            if response.status_code != 503:
                return response
            refusal = response
        if refusal is not None:
            return refusal
        raise last

    async def any_replica(self, request: Request, body: bytes) -> Response:
        """A call on no episode: the next live replica in turn, the one after if it is lost meanwhile."""
        last: ToolGymError = Unavailable("no replica of this fleet is alive", retry_after_s=5.0)
        for upstream in self.in_turn():
            try:
                return await self.send(upstream, request, body)
            except SandboxError as exc:
                last = exc
        raise last


async def _nothing() -> None:
    """No watcher: nothing to ask."""
    return None


def _lost(episode_id: str | None, upstream: Upstream) -> SandboxError:
    """The error for a call on a lost replica: the ``infra_error`` a lost sandbox gives (503, retryable)."""
    what = f"episode {episode_id!r}" if episode_id else "the call"
    return SandboxError(f"{what} was on replica {upstream.info.replica} ({upstream.info.base_url}), which is lost"
                        f" ({upstream.reason}); its episodes are gone: reset to start a new one",
                        retry_after_s=1.0, replica=upstream.info.replica, episode_lost=episode_id is not None,
                        **({"episode_id": episode_id} if episode_id else {}))
