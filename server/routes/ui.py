"""The live viewer at ``/ui``, its login, and the one JSON route it needs besides the API's own.

The viewer is three static files in the package (``toolgym/server/ui/``: a page, one script,
one stylesheet; no build step and nothing fetched from elsewhere, so it works on a machine
without internet). The script reads the API the trainers use: ``GET /v1/episodes`` (live and
recent episodes), ``GET /v1/episodes/{id}`` (a trajectory, replayed turn by turn) and
``GET /v1/stats/timeline`` (defined here: ended episodes over time, for the reward and
pass-rate plots, which nothing else gives).

Auth is the API's: a request with ``Authorization: Bearer <key>`` sees the viewer as it sees
the API. A browser logs in once at ``/ui/login``: the key it types is checked and stored in
the ``toolgym_key`` cookie (HttpOnly, so scripts cannot read it; SameSite=Strict, so no other
site's request carries it; Secure over HTTPS). ``toolgym.server.auth`` accepts that cookie on
GET and HEAD only, so it can read episodes but never change one (CSRF). The login itself takes
JSON, which a cross-site form cannot send, so no other site can log a browser in either.
Without configured keys (loopback, auth off) the viewer opens without a login, as the API does.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from toolgym.errors import NotFound, Unauthorized
from toolgym.server.auth import COOKIE_NAME
from toolgym.server.deps import ManagerDep, OwnerDep

__all__ = ["LoginRequest", "Timeline", "TimelinePoint", "router"]

router = APIRouter()

ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
"""The static files ``/ui/static/{name}`` serves, with their media types (nothing else is served)."""
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
       " form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
"""The pages' Content-Security-Policy: only the package's own script and style run, and no other site may frame them."""


class TimelinePoint(BaseModel):
    """One ended episode: when it ended, its return and whether it succeeded."""

    episode_id: str
    env_id: str
    task_id: str
    ended: float = Field(description="When it ended (Unix seconds).")
    total_reward: float
    success: bool | None = Field(description="The env's success rule at its end; null when not judged (closed).")
    status: str = Field(description="finished or interrupted.")
    reason: str | None


class Timeline(BaseModel):
    """The caller's last ended episodes, oldest first, for plots over time."""

    points: list[TimelinePoint]


class LoginRequest(BaseModel):
    """The viewer's login: the API key, as the API takes it in ``Authorization: Bearer <key>``."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=4096)


@router.get("/v1/stats/timeline", response_model=Timeline, tags=["stats"],
            summary="Ended episodes over time: return and success, for plots")
async def timeline(
    manager: ManagerDep, owner: OwnerDep,
    env_id: Annotated[str | None, Query(max_length=200, description="Only this env's episodes.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Timeline:
    """The caller's last `limit` ended episodes, oldest first: end time, env, task, return and success.

    Only the caller's episodes; the viewer plots reward and pass rate over time per env and task from it.
    """
    rows = await manager.run_blocking(lambda: manager.store.timeline(owner, env_id=env_id, limit=limit))
    return Timeline(points=[TimelinePoint(episode_id=r.episode_id, env_id=r.env_id, task_id=r.task_id, ended=r.ended,
                                          total_reward=r.total_reward, success=r.success, status=r.status,
                                          reason=r.reason) for r in rows])


def _asset(name: str) -> str:
    return resources.files("toolgym.server").joinpath("ui", name).read_text(encoding="utf-8")


def _page(name: str, status: int = 200) -> HTMLResponse:
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer"}
    return HTMLResponse(_asset(name), status_code=status, headers=headers)


def _signed_in(request: Request) -> bool:
    try:
        request.app.state.auth.owner_of_request(request.headers.get("authorization"), request.cookies.get(COOKIE_NAME),
                                                request.method)
    except Unauthorized:
        return False
    return True


@router.get("/ui", include_in_schema=False)
async def viewer(request: Request) -> Response:
    """The viewer's page for a signed-in browser (cookie) or client (header); the login page's address otherwise."""
    if not _signed_in(request):
        return RedirectResponse("/ui/login", status_code=303)
    return _page("index.html")


@router.get("/ui/login", include_in_schema=False)
async def login_page() -> Response:
    """The login form; its script posts the key as JSON to ``POST /ui/login``."""
    return _page("login.html")


@router.post("/ui/login", include_in_schema=False)
async def login(body: LoginRequest, request: Request) -> Response:
    """Check the key as the API would, then keep it in the viewer's cookie; 401 for a key the server refuses."""
    request.app.state.auth.owner(f"Bearer {body.key.strip()}")  # Unauthorized (401) for a bad key
    response = Response(status_code=204)
    response.set_cookie(COOKIE_NAME, body.key.strip(), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/ui/logout", include_in_schema=False)
async def logout() -> Response:
    """Forget the viewer's cookie (it is the key: a shared browser should not keep it)."""
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/ui/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """The viewer's script and stylesheet (no key needed: they hold no data)."""
    media = ASSETS.get(name)
    if media is None:
        raise NotFound(f"no viewer file {name!r}")
    return Response(_asset(name), media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                             "Cache-Control": "no-cache"})
