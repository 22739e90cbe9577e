"""The WebSocket session, ``/v1/ws``: one connection carries reset, step, close and get for many episodes.

A trainer driving hundreds of rollouts so needs neither a connection pool nor a request's
headers per step.

Each text frame is one request, ``{"id", "op", "episode_id"?, "body"?, "idempotency_key"?}``;
each answer is ``{"id", "status", "body"}``: the status and JSON body the HTTP route would have
given (its result, or ``{"error": {...}}`` from ``server/errors.py``), correlated by the
caller's ``id`` as in JSON-RPC 2.0. Requests run concurrently and are answered in completion
order; steps on one episode stay serialized by the episode manager (its per-episode lock), and
the idempotency key means what the ``Idempotency-Key`` header means over HTTP. The work itself
is the HTTP routes' (``run_reset``, ``run_step``, the manager's ``close`` and ``state``), so the
two transports cannot drift apart.

A frame that is not JSON gets a 400 answer and one that does not fit the schema a 422 (with the
frame's ``id`` when it could be read); the socket stays open. The handshake carries the same
``Authorization: Bearer`` header as HTTP and is refused with a 401 and the usual error body.
Episodes belong to the key, not to the socket: a dropped connection ends nothing, in-flight
requests still finish (a retry with the same idempotency key gets their stored result), and
every episode stays addressable over HTTP.

Each frame is a request for the key's limits: it takes a token of the key's rate bucket
(``rate_limit_per_key``; 429 ``rate_limited`` when empty, the socket stays open), and a key
removed from the keys file while its socket is open is refused (401) from its next frame on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from toolgym.errors import PayloadTooLarge, RateLimited, ToolGymError, Unauthorized, http_status
from toolgym.server.auth import Authenticator
from toolgym.server.deps import OwnerDep
from toolgym.server.episodes import EpisodeManager
from toolgym.server.errors import count_error, internal_error, refuse_websocket, validation_error
from toolgym.server.limits import RateLimiter
from toolgym.server.models import ResetRequest, StepRequest
from toolgym.server.routes.episodes import run_reset, run_step, state_response
from toolgym.server.settings import Settings

__all__ = ["MAX_IN_FLIGHT", "WsAnswer", "WsRequest", "router"]

router = APIRouter(tags=["websocket"])

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4096
"""Requests one socket may have running at once; past it the server stops reading frames
until one finishes (back-pressure, as a full TCP window would give)."""

Op = Literal["reset", "step", "close", "get"]


class WsRequest(BaseModel):
    """One request frame."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(default=None, description="The caller's correlation id, echoed in the answer.")
    op: Op = Field(description="reset, step, close or get: the route POST /v1/episodes, POST"
                   " /v1/episodes/{id}/step, DELETE /v1/episodes/{id} or GET /v1/episodes/{id}.")
    episode_id: str | None = Field(default=None, max_length=200, description="The episode (all ops but reset).")
    body: dict[str, Any] | None = Field(
        default=None, description="The HTTP route's JSON body: a ResetRequest for reset, a StepRequest for step."
    )
    idempotency_key: str | None = Field(
        default=None, max_length=200, description="As the Idempotency-Key header (reset and step)."
    )


class WsAnswer(BaseModel):
    """One answer frame."""

    id: str | int | None = Field(description="The request's id (null when the frame could not be read).")
    status: int = Field(description="The HTTP status the route would have given (201, 200, 204, 4xx, 5xx).")
    body: Any = Field(description="The HTTP route's JSON answer, or its error {\"error\": {...}}; null for 204.")


_DESCRIPTION = """A WebSocket session (send this GET with `Upgrade: websocket`; a plain GET is refused
with 426). The handshake carries the usual `Authorization: Bearer <key>` (401 when wrong).

Each text frame is one request, answered by one frame, in completion order (requests run
concurrently; steps on one episode are serialized):

    -> {"id": 7, "op": "step", "episode_id": "ep-...", "body": {"action": "..."}, "idempotency_key": "k-1"}
    <- {"id": 7, "status": 200, "body": {"observation": ..., "reward": 1.0, ...}}

`op` is `reset` (body: ResetRequest, answer as POST /v1/episodes), `step` (body: StepRequest,
as POST /v1/episodes/{episode_id}/step), `close` (as DELETE /v1/episodes/{episode_id}, status
204, body null) or `get` (as GET /v1/episodes/{episode_id}). `status` and `body` are what the
HTTP route would answer, errors included (`{"error": {...}}`). A frame that is not JSON is
answered 400, one that misses the schema 422, and the socket stays open. A dropped socket ends
no episode: resend with the same `idempotency_key` to get the stored result."""


@router.get(
    "/v1/ws", status_code=101, summary="WebSocket session: reset/step/close/get for many episodes",
    description=_DESCRIPTION,
    responses={
        101: {"description": "Switching protocols; then one answer frame (x-websocket-answer-frame) per"
                             " request frame (x-websocket-request-frame)."},
        401: {"description": "Missing or unknown API key (the handshake is refused)."},
        426: {"description": "A plain HTTP GET: this path takes a WebSocket upgrade."},
    },
    openapi_extra={"x-websocket-request-frame": WsRequest.model_json_schema(),
                   "x-websocket-answer-frame": WsAnswer.model_json_schema()},
)
async def ws_without_upgrade(owner: OwnerDep) -> None:
    """Documents the session in the OpenAPI document and tells a plain GET what to do instead.

    FastAPI lists no WebSocket routes, and the key check declares the bearer scheme as the
    handshake needs it.
    """
    raise StarletteHTTPException(426, "GET /v1/ws takes a WebSocket upgrade (Upgrade: websocket)")


@router.websocket("/v1/ws")
async def ws_session(websocket: WebSocket) -> None:
    """Accept the socket (after the key check), then read frames until it closes."""
    app = websocket.app
    try:
        owner: str = app.state.auth.owner(websocket.headers.get("authorization"))
    except Unauthorized as exc:
        await refuse_websocket(websocket, exc)
        return
    await websocket.accept()
    await _Session(websocket, app.state.manager, app.state.settings, owner, app.state.auth,
                   app.state.rate_limiter).serve()


class _Session:
    """One accepted socket: reads frames, runs each as a task, sends answers as they finish."""

    def __init__(self, websocket: WebSocket, manager: EpisodeManager, settings: Settings, owner: str,
                 auth: Authenticator, limiter: RateLimiter) -> None:
        self.websocket = websocket
        self.auth = auth
        self.limiter = limiter
        self.manager = manager
        self.settings = settings
        self.owner = owner
        self.open = True
        self._send_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        """Read frames until the socket closes, at most ``MAX_IN_FLIGHT`` running at once."""
        try:
            while True:
                await self._slots.acquire()
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    self._slots.release()
                    break
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                task = asyncio.create_task(self._answer(raw))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except WebSocketDisconnect:
            pass
        finally:
            # In-flight requests run on (their results are stored under their idempotency
            # keys); only their answers have nowhere to go.
            self.open = False

    async def _answer(self, raw: str | bytes) -> None:
        frame_id: str | int | None = None
        refused: ToolGymError | None = None
        try:
            # Every frame counts, a malformed one too; the refusal is answered with the frame's id.
            if not self.auth.accepts(self.owner):
                refused = Unauthorized("this API key is no longer accepted")
            else:
                self.limiter.take(self.owner)
        except RateLimited as exc:
            refused = exc
        try:
            request = self._parse(raw)
            frame_id = request.id
            if refused is not None:
                raise refused
            status, body = await self._run(request)
        except _FrameError as exc:
            frame_id = exc.frame_id
            status, body = self._error(refused or exc.error)
        except ToolGymError as exc:
            status, body = self._error(exc)
        except Exception as exc:  # one request's bug must not take the socket down
            log.exception("websocket request failed")
            status, body = self._error(internal_error(exc))
        finally:
            self._slots.release()
        await self._send(frame_id, status, body)

    def _parse(self, raw: str | bytes) -> WsRequest:
        if len(raw) > self.settings.max_request_bytes:
            raise _FrameError(None, PayloadTooLarge(
                f"frame over {self.settings.max_request_bytes} bytes (max_request_bytes)",
                max_bytes=self.settings.max_request_bytes,
            ))
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            bad_json = {"loc": ["body"], "msg": str(exc), "type": "json_invalid"}
            raise _FrameError(None, validation_error([bad_json])) from exc
        frame_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(frame_id, str | int) or isinstance(frame_id, bool):
            frame_id = None
        try:
            request = WsRequest.model_validate(data)
        except ValidationError as exc:
            raise _FrameError(frame_id, validation_error(list(exc.errors()))) from exc
        if request.op != "reset" and not request.episode_id:
            raise _FrameError(frame_id, validation_error(
                [{"loc": ["episode_id"], "msg": f"Field required for op {request.op!r}", "type": "missing"}]
            ))
        return request

    async def _run(self, request: WsRequest) -> tuple[int, str]:
        """The HTTP route's work and status for one request, its body as JSON text.

        The body is the route's model serialized once by pydantic (as the HTTP route answers
        it), then set into the answer frame as it is, never turned back into a dict.
        """
        episode_id = request.episode_id or ""
        if request.op == "reset":
            reset = await run_reset(self.manager, self.owner, _body(ResetRequest, request), request.idempotency_key)
            return 201, reset.model_dump_json()
        if request.op == "step":
            step = await run_step(self.manager, self.owner, self.settings, episode_id, _body(StepRequest, request),
                                  request.idempotency_key)
            return 200, step.model_dump_json()
        if request.op == "close":
            await self.manager.close(self.owner, episode_id)
            return 204, "null"
        return 200, state_response(await self.manager.state(self.owner, episode_id)).model_dump_json()

    def _error(self, exc: ToolGymError) -> tuple[int, str]:
        status = http_status(exc)
        if status >= 500:
            log.warning("websocket request -> %s: %s", exc.code, exc.message)
        count_error(self.websocket.app, exc)
        return status, json.dumps(exc.to_wire(), ensure_ascii=False)

    async def _send(self, frame_id: str | int | None, status: int, body: str) -> None:
        """Send one answer frame, ``{"id", "status", "body"}``, with ``body`` already JSON text."""
        if not self.open:
            return
        text = f'{{"id":{json.dumps(frame_id, ensure_ascii=False)},"status":{status},"body":{body}}}'
        async with self._send_lock:
            try:
                await self.websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.open = False


class _FrameError(Exception):
    """A frame that could not be read as a request, with its id when that much was legible."""

    def __init__(self, frame_id: str | int | None, error: ToolGymError) -> None:
        super().__init__(error.message)
        self.frame_id = frame_id
        self.error = error


def _body(model: type[ResetRequest] | type[StepRequest], request: WsRequest) -> Any:
    """The frame's ``body`` as the HTTP route's request model.

    Its errors are located under ``body``, as FastAPI locates them.
    """
    if request.body is None:
        raise _FrameError(request.id, validation_error([{"loc": ["body"], "msg": "Field required", "type": "missing"}]))
    try:
        return model.model_validate(request.body)
    except ValidationError as exc:
        errors = [{**e, "loc": ["body", *e.get("loc", ())]} for e in exc.errors()]
        raise _FrameError(request.id, validation_error(errors)) from exc

