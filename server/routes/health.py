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

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: accepting resets, sandbox backend and warm pool state")
async def readyz(request: Request, manager: ManagerDep) -> JSONResponse:
    backend = request.app.state.backend
    body: dict[str, Any] = {
        "accepting": manager.accepting,
        "open_episodes": manager.open_episodes,
        "max_live_episodes": manager.settings.max_live_episodes,
        "backend": None if backend is None else {"name": backend.name, "isolated": backend.isolated},
    }
    ready = manager.accepting and manager.open_episodes < manager.settings.max_live_episodes
    if backend is not None:
        try:
            # The Docker check is blocking I/O: keep it off the event loop.
            await anyio.to_thread.run_sync(backend.check)
        except SandboxError as exc:
            body["backend"]["error"] = exc.message
            ready = False
    if manager.pool is not None:
        body["warm_pool"] = {"ready": manager.pool.ready, "size": manager.pool.size,
                             "last_error": manager.pool.last_error}
    body["status"] = "ready" if ready else "not_ready"
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, manager: ManagerDep) -> Response:
    m = request.app.state.metrics
    m.live_episodes.set(manager.open_episodes)
    if manager.pool is not None:
        m.warm_sandboxes.set(manager.pool.ready)
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/version", response_model=VersionInfo, summary="Server and API version, for compatibility checks")
async def version(manager: ManagerDep, owner: OwnerDep) -> VersionInfo:
    return VersionInfo(version=__version__, api_version=API_VERSION, envs=sorted(manager.families))
