"""Liveness, readiness, version and metrics: the routes that need no key."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from toolgym._version import API_VERSION, __version__
from toolgym.errors import SandboxError
from toolgym.server.deps import ManagerDep, OwnerDep
from toolgym.server.models import VersionInfo
from toolgym.server.sandbox.select import isolation_of

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Answer 200 while the process serves requests; it checks nothing else (use `/readyz` for that)."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: accepting resets, sandbox backend and warm pool state")
async def readyz(request: Request, manager: ManagerDep) -> JSONResponse:
    """Answer 200 when a reset would be accepted, else 503 (shutting down, full, or the sandbox backend fails).

    The body also reports open episodes, the sandbox backend, the warm pool, the teardown backlog
    (sandboxes of ended episodes still being removed in the background) and the store's write
    backlog, so a load balancer and an operator read the same answer.
    """
    backend = request.app.state.backend
    status = manager.status()
    body: dict[str, Any] = {
        "accepting": status.accepting,
        "open_episodes": status.open_episodes,
        "max_live_episodes": status.max_live_episodes,
        "backend": None if backend is None else {"name": backend.name, "isolated": backend.isolated},
    }
    ready = status.ready
    if backend is not None:
        try:
            # The Docker check is blocking I/O: keep it off the event loop.
            await anyio.to_thread.run_sync(backend.check)
        except SandboxError as exc:
            body["backend"]["error"] = exc.message
            ready = False
    pool = status.warm_pool
    if pool is not None:
        body["warm_pool"] = {"ready": pool.ready, "size": pool.size, "last_error": pool.last_error,
                             "max_size": pool.max_size, "target": pool.target, "creating": pool.creating,
                             "resets_per_s": pool.resets_per_s, "create_s": pool.create_s}
    teardown = status.teardown
    body["teardown"] = {"backlog": teardown.backlog, "workers": teardown.workers, "capacity": teardown.capacity,
                        "removed": teardown.removed, "failed": teardown.failed}
    body["store_backlog"] = status.store_backlog
    body["status"] = "ready" if ready else "not_ready"
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, manager: ManagerDep) -> Response:
    """Serve the Prometheus metrics in the text exposition format; no API key needed.

    The gauges (open episodes, warm pool, teardown and store backlogs) are refreshed at each scrape.
    """
    m = request.app.state.metrics
    status = manager.status()
    m.live_episodes.set(status.open_episodes)
    if status.warm_pool is not None:
        m.warm_sandboxes.set(status.warm_pool.ready)
        m.warm_pool_target.set(status.warm_pool.target)
    m.teardown_backlog.set(status.teardown.backlog)
    m.sandboxes_removed.set(status.teardown.removed)
    m.teardown_failures.set(status.teardown.failed)
    m.store_backlog.set(status.store_backlog)
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/version", response_model=VersionInfo, summary="Server and API version, for compatibility checks")
async def version(request: Request, manager: ManagerDep, owner: OwnerDep) -> VersionInfo:
    """Answer the server and API versions, the env ids offered, the isolation tier and the replica token.

    Meant for compatibility checks: a client can compare `api_version` with the one it was built for,
    and a trainer can refuse to run untrusted code on the `process` tier. `replica` is the token this
    server's episode ids carry, so a caller can tell which server of a fleet answered and match it
    with the ids it holds.
    """
    backend = request.app.state.backend
    isolation = None if backend is None else isolation_of(backend)
    return VersionInfo(version=__version__, api_version=API_VERSION, envs=sorted(manager.families),
                       isolation=isolation, replica=manager.replica)  # type: ignore[arg-type]
