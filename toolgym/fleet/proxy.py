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
back: a new one is a new token.

The entry point answers these itself: ``/healthz``; ``/readyz`` (ready when any live replica
is); ``/v1/version`` (a live replica's answer, with ``replica`` set to ``"entry"`` and a
``replicas`` list: token, address, node, pid, alive; with no replica left, its own answer from
the env ids it last saw); ``/metrics`` (``toolgym_fleet_replica_up`` per replica; each replica
serves its own ``/metrics``). WebSocket sessions (``/v1/ws``), batches (``/v1/batch``, whose
items may name episodes of several replicas) and the OpenEnv routes are not routed here:
clients of those talk to a replica's own address, listed in ``/v1/version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from toolgym._version import API_VERSION, __version__
from toolgym.client._routing import replica_of
from toolgym.errors import EpisodeNotFound, PayloadTooLarge, SandboxError, ToolGymError, Unavailable
from toolgym.fleet.placement import ReplicaInfo
from toolgym.server.errors import error_response

__all__ = ["ENTRY_REPLICA", "EntryPoint", "Upstream", "create_entry_app"]

log = logging.getLogger("toolgym.fleet")

ENTRY_REPLICA = "entry"
"""The ``replica`` the entry point's own ``/v1/version`` reports; never a replica's token (those are hex)."""

_EPISODE_PATH = re.compile(r"/v1/episodes/(?P<id>[^/]+)(?:/.*)?")
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
    failures: int = 0
    dead: asyncio.Event = field(default_factory=asyncio.Event)

    def lose(self, reason: str) -> None:
        """Mark the replica dead (once): its in-flight calls are answered, its episodes lost."""
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
    """

    def __init__(self, replicas: Sequence[ReplicaInfo], *, watcher: Watcher | None = None,
                 check_interval_s: float = 1.0, check_timeout_s: float = 2.0, failures_to_dead: int = 3,
                 call_timeout_s: float = 600.0, max_request_bytes: int = 8 * 1024 * 1024) -> None:
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

        Raises:
            EpisodeNotFound: no replica of this fleet makes ids of that shape or token.
            SandboxError: its replica is lost, so is the episode (retryable, as a lost sandbox).
        """
        token = replica_of(episode_id)
        upstream = self._by_token.get(token) if token is not None else None
        if upstream is None:
            raise EpisodeNotFound(episode_id)
        if not upstream.alive:
            raise _lost(episode_id, upstream)
        return upstream

    # --- health ---------------------------------------------------------------------------------
    async def check(self) -> None:
        """One round of checks: ``/healthz`` of every live replica and the watcher, side by side."""
        assert self.client is not None
        live = [u for u in self.upstreams if u.alive]
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
                upstream.lose(failure)
            else:
                upstream.failures += 1
                if upstream.failures >= self._failures_to_dead:
                    upstream.lose(f"{upstream.failures} health checks in a row failed ({failure})")
        if alive is not None:
            for upstream, ok in zip(self.upstreams, alive, strict=True):
                if not ok:
                    upstream.lose("its Ray actor is dead")

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
            raise _lost(episode_id, upstream)
        try:
            answer = call.result()
        except httpx.ConnectError as exc:  # nothing listens there any more
            upstream.lose(f"its port refused a call ({type(exc).__name__})")
            raise _lost(episode_id, upstream) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # A dropped connection is a dead process, or a kept-alive connection the replica
            # closed as we reused it: whether it still answers tells which.
            if not await self._answers(upstream):
                upstream.lose(f"a call lost its connection ({type(exc).__name__}) and /healthz does not answer")
                raise _lost(episode_id, upstream) from exc
            raise Unavailable(f"the connection to replica {upstream.info.replica} dropped during the call"
                              f" ({type(exc).__name__}); it still answers: retry", retry_after_s=1.0,
                              replica=upstream.info.replica) from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"replica {upstream.info.replica} did not answer within {self._call_timeout:g} s",
                              retry_after_s=5.0, replica=upstream.info.replica) from exc
        status, out_headers, content = answer
        return Response(content, status_code=status, headers=out_headers)

    async def _answers(self, upstream: Upstream) -> bool:
        """Whether ``upstream`` answers ``/healthz`` on a new connection now.

        A new one: a pooled connection to a process that just died fails like the call did, and
        so would say nothing of whether the process is still there.
        """
        try:
            async with httpx.AsyncClient(timeout=self._check_timeout) as fresh:
                r = await fresh.get(f"{upstream.info.base_url}/healthz")
        except httpx.HTTPError:
            return False
        return r.status_code == 200

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


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (``PayloadTooLarge``) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes", limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


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


def create_entry_app(entry: EntryPoint) -> Starlette:
    """The entry point's ASGI app (see the module doc for what it answers itself and what it routes)."""

    async def routed(request: Request) -> Response:
        path = request.url.path
        try:
            body = await _read_body(request, entry.max_request_bytes)
            match = _EPISODE_PATH.fullmatch(path)
            if match is not None:
                episode_id = match.group("id")
                return await entry.send(entry.owner(episode_id), request, body, episode_id)
            if request.method == "POST" and path == "/v1/episodes":
                return await entry.reset(request, body)
            return await entry.any_replica(request, body)
        except ToolGymError as exc:
            return error_response(exc)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        assert entry.client is not None
        live = [u for u in entry.upstreams if u.alive]

        async def one(u: Upstream) -> dict[str, Any]:
            try:
                r = await entry.client.get(f"{u.info.base_url}/readyz", timeout=5.0)  # type: ignore[union-attr]
                return {"replica": u.info.replica, "ready": r.status_code == 200, "status": r.json().get("status")}
            except (httpx.HTTPError, ValueError) as exc:
                return {"replica": u.info.replica, "ready": False, "status": type(exc).__name__}

        rows = list(await asyncio.gather(*(one(u) for u in live)))
        rows += [{"replica": u.info.replica, "ready": False, "status": "lost"} for u in entry.upstreams if not u.alive]
        ready = any(row["ready"] for row in rows)
        return JSONResponse({"status": "ready" if ready else "not_ready", "replicas": rows},
                            status_code=200 if ready else 503)

    async def version(request: Request) -> Response:
        # A live replica answers (and checks the key); with none left the entry point still
        # answers, from the env ids it last saw, so an operator can read which replicas were lost.
        try:
            answer = await entry.any_replica(request, b"")
        except ToolGymError:
            body: dict[str, Any] = {"envs": entry.envs}
        else:
            if answer.status_code != 200:
                return answer
            body = json.loads(bytes(answer.body))
            entry.envs = list(body.get("envs", []))
        body.update(version=__version__, api_version=API_VERSION, replica=ENTRY_REPLICA,
                    replicas=[u.describe() for u in entry.upstreams])
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        lines = ["# HELP toolgym_fleet_replica_up Whether the entry point routes to this replica (1) or lost it (0).",
                 "# TYPE toolgym_fleet_replica_up gauge"]
        lines += [f'toolgym_fleet_replica_up{{replica="{u.info.replica}"}} {int(u.alive)}' for u in entry.upstreams]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Idle connections are dropped before the replicas' uvicorn drops them (5 s), so a reused
        # connection is rarely one the replica is closing.
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=2.0)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:
            entry.client = client
            watching = asyncio.ensure_future(entry.watch())
            try:
                yield
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
                entry.client = None

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/version", version, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/{path:path}", routed, methods=methods),
    ]
    return Starlette(routes=routes, lifespan=lifespan)

