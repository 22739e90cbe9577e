"""The entry point's ASGI app: the routes it answers itself, and every other call routed by ``EntryPoint``.

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
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from toolgym._version import API_VERSION, __version__
from toolgym.errors import PayloadTooLarge, ToolGymError
from toolgym.fleet.proxy import EPISODE_PATH, EntryPoint, Upstream
from toolgym.server.errors import error_response

__all__ = ["ENTRY_REPLICA", "create_entry_app"]

ENTRY_REPLICA = "entry"
"""The ``replica`` the entry point's own ``/v1/version`` reports; never a replica's token (those are hex)."""


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


def create_entry_app(entry: EntryPoint) -> Starlette:
    """The entry point's ASGI app (see the module doc for what it answers itself and what it routes)."""

    async def routed(request: Request) -> Response:
        path = request.url.path
        try:
            body = await _read_body(request, entry.max_request_bytes)
            match = EPISODE_PATH.fullmatch(path)
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
        client = entry.client
        assert client is not None
        live = [u for u in entry.upstreams if u.alive]

        async def one(u: Upstream) -> dict[str, Any]:
            try:
                r = await client.get(f"{u.info.base_url}/readyz", timeout=5.0)
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

