"""OpenEnv's wire protocol at ``/openenv/{env_name}``, so OpenEnv's own client plays ToolGym episodes.

OpenEnv (https://github.com/huggingface/OpenEnv, ``openenv`` on PyPI) drives an env through a
WebSocket at ``{base_url}/ws``: ``{"type": "reset", "data": {...}}``,
``{"type": "step", "data": <action>}``, ``{"type": "state"}`` and ``{"type": "close"}``, answered
by ``{"type": "observation", "data": {"observation", "reward", "done", "metadata"}}``,
``{"type": "state", "data": {...}}`` or ``{"type": "error", "data": {"message", "code"}}``. An
OpenEnv client (``GenericEnvClient`` or an ``EnvClient`` subclass) pointed at
``{toolgym_url}/openenv/ToolUse-v0`` therefore resets and steps a ToolGym episode with no adapter;
its ``headers={"Authorization": "Bearer <key>"}`` option carries the usual API key.

The work is the ToolGym routes' own (``run_reset``, ``run_step``, the manager's ``state`` and
``close``): only the shapes are translated here, and the episode's state stays on the server.

* The action is either ``{"message": "<the raw assistant turn>"}`` or the assistant message
  itself, ``{"content": ..., "tool_calls": [...]}`` (OpenAI style); ``metadata`` (OpenEnv's
  ``Action`` field) is accepted and ignored.
* The observation is ToolGym's (``messages``, ``tools`` when shown, env-specific keys) plus
  ``metadata``; ``reward`` is the step's (``null`` after a reset), ``done`` is
  ``terminated or truncated``, and ``metadata`` is the step's ``info`` with ``episode_id``,
  ``terminated`` and ``truncated``, so the Gymnasium distinction is not lost.
* One socket owns one episode at a time, as an OpenEnv session owns one env instance: a new
  reset closes the previous episode, and so does ``close`` or a dropped socket. Ended episodes
  stay readable over HTTP by id (``GET /v1/episodes/{episode_id}``).
* The HTTP routes (``POST reset``, ``POST step``, ``GET state``) keep the episode on the server
  too, so a step and a state name it: ``{"action": ..., "episode_id": ...}`` and
  ``?episode_id=``; nothing closes it but its end, ``DELETE /v1/episodes/{episode_id}``, or the
  idle reaper.

Errors are ToolGym's (``server/errors.py`` over HTTP); over the socket an error frame carries
OpenEnv's ``message`` and ``code`` plus the HTTP ``status`` and ToolGym's ``error`` object, and
the socket stays open.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from toolgym._version import __version__
from toolgym.errors import (
    AtCapacity,
    Conflict,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    ToolGymError,
    Unauthorized,
    ValidationFailed,
    http_status,
)
from toolgym.server.deps import ManagerDep, OwnerDep, SettingsDep
from toolgym.server.episodes import EpisodeManager
from toolgym.server.errors import count_error, internal_error, refuse_websocket, validation_error
from toolgym.server.routes._openenv_wire import (
    OpenEnvAction,
    OpenEnvMetadata,
    OpenEnvObservation,
    OpenEnvResetRequest,
    OpenEnvResult,
    OpenEnvSchema,
    OpenEnvState,
    OpenEnvStepRequest,
    episode_state,
    reset_episode,
    reset_result,
    resolve_env_id,
    step_result,
)
from toolgym.server.routes.episodes import run_step
from toolgym.server.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/openenv", tags=["openenv"])

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


# --- HTTP ------------------------------------------------------------------------------------------------
_ENV = "/{env_name:path}"


@router.get(_ENV + "/health", summary="OpenEnv health: the env is served")
async def health(env_name: str, manager: ManagerDep) -> dict[str, str]:
    """Answer OpenEnv's ``{"status": "healthy"}`` while the env is served (404 for an unknown env); no key needed."""
    resolve_env_id(manager, env_name)
    return {"status": "healthy"}


@router.get(_ENV + "/metadata", response_model=OpenEnvMetadata, summary="OpenEnv metadata: what the env is")
async def metadata(env_name: str, manager: ManagerDep, owner: OwnerDep) -> OpenEnvMetadata:
    """The env's id, description and the server's version."""
    env_id = resolve_env_id(manager, env_name)
    return OpenEnvMetadata(name=env_id, description=manager.families[env_id].description, version=__version__)


@router.get(_ENV + "/schema", response_model=OpenEnvSchema, summary="OpenEnv schemas: action, observation, state")
async def schema(env_name: str, manager: ManagerDep, owner: OwnerDep) -> OpenEnvSchema:
    """JSON schemas of what ``step`` takes, what it answers in ``observation``, and what ``state`` answers."""
    resolve_env_id(manager, env_name)
    return OpenEnvSchema(action=OpenEnvAction.model_json_schema(), observation=OpenEnvObservation.model_json_schema(),
                         state=OpenEnvState.model_json_schema())


@router.post(_ENV + "/reset", response_model=OpenEnvResult, summary="OpenEnv reset: a new episode")
async def reset(
    env_name: str, manager: ManagerDep, owner: OwnerDep, body: OpenEnvResetRequest | None = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> OpenEnvResult:
    """Start an episode as ``POST /v1/episodes`` does; its id is ``metadata.episode_id``, to name it in steps.

    The episode stays open on the server until it ends or is closed (``DELETE /v1/episodes/{episode_id}``).
    """
    env_id = resolve_env_id(manager, env_name)
    return reset_result(await reset_episode(manager, owner, env_id, body or OpenEnvResetRequest(), idempotency_key))


@router.post(_ENV + "/step", response_model=OpenEnvResult, summary="OpenEnv step: one action on an episode")
async def step(
    env_name: str, body: OpenEnvStepRequest, manager: ManagerDep, owner: OwnerDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> OpenEnvResult:
    """Play one action on ``episode_id`` as ``POST /v1/episodes/{episode_id}/step`` does, errors included."""
    resolve_env_id(manager, env_name)
    result = await run_step(manager, owner, settings, body.episode_id, body.action.step_request(), idempotency_key)
    return step_result(body.episode_id, result)


@router.get(_ENV + "/state", response_model=OpenEnvState, summary="OpenEnv state: an episode's turn and status")
async def state(
    env_name: str, manager: ManagerDep, owner: OwnerDep,
    episode_id: Annotated[str, Query(max_length=200, description="The episode.")],
) -> OpenEnvState:
    """The episode's ``step_count`` and facts (``GET /v1/episodes/{episode_id}`` has its trajectory)."""
    resolve_env_id(manager, env_name)
    return await episode_state(manager, owner, episode_id)


# --- WebSocket -------------------------------------------------------------------------------------------
_WS_DESCRIPTION = """OpenEnv's session socket (send this GET with `Upgrade: websocket`; a plain GET is
refused with 426). The handshake carries `Authorization: Bearer <key>` (OpenEnv's client: its
`headers=` option); a wrong key is refused with 401, an unknown env with 404.

    -> {"type": "reset", "data": {"seed": 7, "task_id": "...", "options": {...}}}
    <- {"type": "observation", "data": {"observation": {...}, "reward": null, "done": false, "metadata": {...}}}
    -> {"type": "step", "data": {"message": "<tool_call>...</tool_call>"}}
    <- {"type": "observation", "data": {"observation": {...}, "reward": 1.0, "done": true, "metadata": {...}}}
    -> {"type": "state"}
    <- {"type": "state", "data": {"episode_id": "...", "step_count": 1, ...}}
    -> {"type": "close"}

Frames are answered in order. An error is `{"type": "error", "data": {"message", "code", "status",
"error"}}` and the socket stays open. The socket owns one episode at a time: a new reset, `close`
or a dropped socket closes it; it stays readable at `GET /v1/episodes/{episode_id}`."""


@router.get(_ENV + "/ws", status_code=101, summary="OpenEnv session socket: reset/step/state/close",
            description=_WS_DESCRIPTION,
            responses={401: {"description": "Missing or unknown API key (the handshake is refused)."},
                       426: {"description": "A plain HTTP GET: this path takes a WebSocket upgrade."}})
async def ws_without_upgrade(env_name: str, owner: OwnerDep) -> None:
    """Documents the socket in the OpenAPI document (FastAPI lists no WebSocket routes) and refuses a plain GET."""
    raise StarletteHTTPException(426, "this path takes a WebSocket upgrade (Upgrade: websocket)")


@router.websocket(_ENV + "/ws")
async def ws_session(websocket: WebSocket, env_name: str) -> None:
    """Check the key and the env, accept, then answer frames until the socket closes."""
    app = websocket.app
    try:
        owner: str = app.state.auth.owner(websocket.headers.get("authorization"))
        env_id = resolve_env_id(app.state.manager, env_name)
    except (Unauthorized, NotFound) as exc:
        await refuse_websocket(websocket, exc)
        return
    await websocket.accept()
    await _Session(websocket, app.state.manager, app.state.settings, owner, env_id).serve()


_CAPACITY = (AtCapacity, QuotaExceeded)


class _Session:
    """One accepted socket and the one episode it owns."""

    def __init__(self, websocket: WebSocket, manager: EpisodeManager, settings: Settings, owner: str,
                 env_id: str) -> None:
        self.websocket = websocket
        self.manager = manager
        self.settings = settings
        self.owner = owner
        self.env_id = env_id
        self.episode_id: str | None = None

    async def serve(self) -> None:
        """Answer frames one at a time (OpenEnv's client waits for each answer) until ``close`` or a disconnect."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                answer = await self._answer(raw)
                if answer is None:
                    await self.websocket.close()
                    return
                await self.websocket.send_text(json.dumps(answer, ensure_ascii=False))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the peer went away mid-answer
        finally:
            await self._end_episode()

    async def _answer(self, raw: str | bytes) -> dict[str, Any] | None:
        """The answer frame of one request frame; ``None`` for ``close``."""
        try:
            app = self.websocket.app
            if not app.state.auth.accepts(self.owner):
                raise Unauthorized("this API key is no longer accepted")
            app.state.rate_limiter.take(self.owner)
            return await self._run(self._parse(raw))
        except _FrameError as exc:
            return self._error(exc.error, exc.code)
        except ToolGymError as exc:
            return self._error(exc)
        except Exception as exc:  # one request's bug must not take the socket down
            log.exception("openenv websocket request failed")
            return self._error(internal_error(exc))

    def _parse(self, raw: str | bytes) -> dict[str, Any]:
        if len(raw) > self.settings.max_request_bytes:
            raise PayloadTooLarge(f"frame over {self.settings.max_request_bytes} bytes (max_request_bytes)",
                                  max_bytes=self.settings.max_request_bytes)
        try:
            frame = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            bad = validation_error([{"loc": ["body"], "msg": str(exc), "type": "json_invalid"}])
            raise _FrameError(bad, "INVALID_JSON") from exc
        if not isinstance(frame, dict):
            raise _FrameError(validation_error([{"loc": ["body"], "msg": "a frame is a JSON object",
                                                 "type": "dict_type"}]), "VALIDATION_ERROR")
        return frame

    async def _run(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        kind = frame.get("type")
        if kind == "reset":
            body = _validate(OpenEnvResetRequest, frame.get("data") or {})
            await self._end_episode()
            reset = await reset_episode(self.manager, self.owner, self.env_id, body, None)
            self.episode_id = reset.episode_id
            return {"type": "observation", "data": reset_result(reset).model_dump(mode="json")}
        if kind == "step":
            action = _validate(OpenEnvAction, frame.get("data"))
            if self.episode_id is None:
                raise Conflict("step before reset: this socket has no episode (send a reset first)")
            result = await run_step(self.manager, self.owner, self.settings, self.episode_id, action.step_request(),
                                    None)
            return {"type": "observation", "data": step_result(self.episode_id, result).model_dump(mode="json")}
        if kind == "state":
            state = await episode_state(self.manager, self.owner, self.episode_id)
            return {"type": "state", "data": state.model_dump(mode="json")}
        if kind == "close":
            return None
        unknown = validation_error([{"loc": ["type"], "msg": f"unknown message type {kind!r} (reset, step, state,"
                                     " close)", "type": "literal_error"}])
        raise _FrameError(unknown, "UNKNOWN_TYPE")

    async def _end_episode(self) -> None:
        """Close the socket's episode, if any (closing an ended one is harmless)."""
        episode_id, self.episode_id = self.episode_id, None
        if episode_id is None:
            return
        try:
            await self.manager.close(self.owner, episode_id)
        except ToolGymError as exc:  # e.g. the server is shutting down and closes it itself
            log.info("openenv socket could not close %s: %s", episode_id, exc.message)

    def _error(self, exc: ToolGymError, code: str | None = None) -> dict[str, Any]:
        """OpenEnv's error frame: its ``message`` and ``code``, with ToolGym's status and error object."""
        status = http_status(exc)
        if status >= 500:
            log.warning("openenv websocket request -> %s: %s", exc.code, exc.message)
        count_error(self.websocket.app, exc)
        if code is None:
            code = ("VALIDATION_ERROR" if isinstance(exc, ValidationFailed)
                    else "CAPACITY_REACHED" if isinstance(exc, _CAPACITY) else "EXECUTION_ERROR")
        return {"type": "error", "data": {"message": exc.message, "code": code, "status": status,
                                          "error": exc.to_wire()["error"]}}


class _FrameError(Exception):
    """A frame refused before it ran, with OpenEnv's error code for it."""

    def __init__(self, error: ToolGymError, code: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.code = code


def _validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``; a schema miss is a 422 located under ``data``, as OpenEnv's frames nest it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ["data", *e.get("loc", ())]} for e in exc.errors()]
        raise _FrameError(validation_error(errors), "VALIDATION_ERROR") from exc

