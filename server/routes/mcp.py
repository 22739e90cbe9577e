"""An MCP server per episode at ``/v1/episodes/{episode_id}/mcp``: the episode's tools over streamable HTTP.

MCP-speaking harnesses (agent SDKs, verifiers toolsets, OpenEnv's MCP actions) then call a
ToolGym episode's sandboxed tools with no adapter, and every call is one step of the episode:
the same path as ``POST /v1/episodes/{episode_id}/step`` (``run_step``: the per-episode lock,
idempotency, the store, the reward), so the step rewards accrue to the episode as they would
over HTTP and ``GET /v1/episodes/{episode_id}`` shows them.

Transport: MCP's streamable HTTP (https://modelcontextprotocol.io/specification/2025-06-18/basic/transports),
handshake revisions 2024-11-05 to 2025-11-25. A POST carries one JSON-RPC 2.0 message (or, as
2025-03-26 allows, a batch); a request is answered in ``application/json``, or as one
``text/event-stream`` event when the client accepts only that; notifications and responses
get 202 with no body. ``initialize`` opens a session: its ``Mcp-Session-Id`` names the
episode and the key that opened it, later requests may carry it (an unknown or ended one is
a 404, so the client opens a new one), and DELETE ends it (the episode stays open: it ends
as episodes do). A request without a session id is served too (stateless), so ``curl`` can
call a tool. There is no server-to-client stream: GET is 405. An ``Origin`` header whose
host is not the ``Host`` the request reached is refused (403), against DNS rebinding, and so
is an ``MCP-Protocol-Version`` header naming a revision not served (400).

Methods: ``initialize``, ``notifications/initialized``, ``ping``, ``tools/list`` and
``tools/call``. The tools are the episode's: ToolUse shows its task's tools and FunctionCall
its task's functions (the reset's OpenAI schemas, ``parameters`` as ``inputSchema``);
CodeMath has one ``python`` tool whose ``code`` runs as the turn's code block. A call's result
holds the tool's output as text; ``structuredContent`` and ``_meta["toolgym/step"]`` carry the
step's reward, ``terminated``, ``truncated`` and ``info``. A tool that failed (its error text,
a timeout, an invalid call) or a call on an episode that has ended is ``isError: true``.
``params._meta`` may carry ``toolgym/idempotency_key`` and ``toolgym/expected_turn``, which
mean what the step route's ``Idempotency-Key`` and ``expected_turn`` mean.

Auth is the API's: the ``Authorization: Bearer <key>`` header (a cookie never authenticates a
POST). Errors are ToolGym's error tree: a JSON-RPC error whose ``data`` holds the HTTP status
and ToolGym's error object, sent with that HTTP status (404 unknown episode or another key's,
409, 413, 422 invalid params, 429, 503); an unknown tool is -32602 (422).

Why not the ``mcp`` SDK's server: on mcp 2.3.0 it brings seven more packages (mcp-types,
PyJWT, cryptography, cffi, pycparser, sse-starlette, python-multipart), and importing its
streamable HTTP server after ``toolgym.server.app`` took 0.33-0.56 s more, against the app's own
0.44-0.69 s (three runs on a loaded 2-core machine), on every ``toolgym serve``;
this endpoint needs five methods over the step path the server already has. The SDK's own
client is what the tests use (tests/server/test_mcp.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from toolgym._version import __version__
from toolgym.errors import (
    BadRequest,
    EpisodeFinished,
    NotFound,
    ToolGymError,
    ValidationFailed,
    http_status,
)
from toolgym.server.deps import ManagerDep, OwnerDep, SettingsDep
from toolgym.server.episodes import EpisodeManager
from toolgym.server.errors import count_error, internal_error
from toolgym.server.models import StepRequest
from toolgym.server.routes._mcp_wire import (
    CODE_TOOL_ENVS,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    OPENAPI_REQUEST,
    OPENAPI_RESPONSES,
    PARSE_ERROR,
    PROTOCOL_VERSIONS,
    SERVER_ERROR,
    SESSION_HEADER,
    VERSION_HEADER,
    McpSessions,
    tool_result,
    tools_of,
)
from toolgym.server.routes._openenv_wire import checked
from toolgym.server.routes.episodes import run_step
from toolgym.server.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/v1/episodes", tags=["mcp"])

log = logging.getLogger(__name__)


def _sessions(request: Request) -> McpSessions:
    """The app's session table, made on first use (``create_app`` needs to know nothing of MCP)."""
    state = request.app.state
    sessions = getattr(state, "mcp_sessions", None)
    if sessions is None:
        sessions = state.mcp_sessions = McpSessions()
    return sessions


# --- the route -------------------------------------------------------------------------------------
class _RpcError(Exception):
    """A JSON-RPC error that is not one of ToolGym's (bad envelope, unknown method)."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


_MCP = "/{episode_id}/mcp"
_DESCRIPTION = """The episode's tools as an MCP server (streamable HTTP, JSON-RPC 2.0 over POST): `initialize`,
`notifications/initialized`, `ping`, `tools/list`, `tools/call`. Each `tools/call` is one step of the
episode (reward in `structuredContent` and `_meta["toolgym/step"]`). Send `Accept: application/json,
text/event-stream` and `Authorization: Bearer <key>`; see docs/mcp.md."""


@router.post(_MCP, summary="MCP (streamable HTTP): the episode's tools; each call is a step",
             description=_DESCRIPTION, response_class=JSONResponse, responses=OPENAPI_RESPONSES,
             openapi_extra=OPENAPI_REQUEST)
async def mcp_post(episode_id: str, request: Request, manager: ManagerDep, owner: OwnerDep,
                   settings: SettingsDep) -> Response:
    """Answer one JSON-RPC message (or a batch) for the episode's MCP session."""
    if not _same_origin(request):
        return _rpc_response(request, None, _RpcError(INVALID_REQUEST, "the Origin of this request is not this"
                                                      " server (MCP's DNS rebinding guard)", 403))
    version = request.headers.get(VERSION_HEADER)
    if version is not None and version not in PROTOCOL_VERSIONS:
        return _rpc_response(request, None, _RpcError(INVALID_REQUEST, f"unsupported {VERSION_HEADER} {version!r};"
                                                      f" this server speaks {', '.join(PROTOCOL_VERSIONS)}"))
    sessions = _sessions(request)
    session_id = request.headers.get(SESSION_HEADER)
    if session_id is not None and sessions.get(session_id, owner, episode_id) is None:
        return _rpc_response(request, None, _RpcError(INVALID_REQUEST, "unknown or ended MCP session;"
                                                      " initialize a new one", 404))
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return _rpc_response(request, None, _RpcError(PARSE_ERROR, "the body is not JSON"))
    messages = body if isinstance(body, list) else [body]
    if not messages:
        return _rpc_response(request, None, _RpcError(INVALID_REQUEST, "an empty batch"))
    call = _Call(request, manager, owner, settings, episode_id, sessions)
    answers: list[dict[str, Any]] = []
    status = 200
    for message in messages:
        answer, code = await call.answer(message)
        if answer is not None:
            answers.append(answer)
            status = max(status, code)
    if not answers:
        return Response(status_code=202)
    headers = {SESSION_HEADER: call.new_session} if call.new_session else {}
    return _respond(request, answers if isinstance(body, list) else answers[0], status, headers)


@router.get(_MCP, status_code=405, summary="MCP: no server-to-client stream (405)",
            responses={405: {"description": "This MCP server sends nothing unasked; POST requests."}})
async def mcp_get(episode_id: str, owner: OwnerDep) -> Response:
    """Refuse the optional server-to-client SSE stream: this server never sends anything unasked."""
    raise StarletteHTTPException(405, "this MCP server has no server-to-client stream; POST requests (DELETE ends"
                                      " a session)")


@router.delete(_MCP, status_code=204, summary="MCP: end a session (the episode stays open)")
async def mcp_delete(episode_id: str, request: Request, owner: OwnerDep) -> Response:
    """End the MCP session named by ``Mcp-Session-Id``; the episode itself ends as episodes do.

    Ending an unknown session is a 404, as the spec has it for any request naming one.
    """
    session_id = request.headers.get(SESSION_HEADER)
    sessions = _sessions(request)
    if session_id is None:
        raise BadRequest(f"DELETE needs the {SESSION_HEADER} header")
    if sessions.get(session_id, owner, episode_id) is None:
        raise NotFound(f"no MCP session {session_id!r} for episode {episode_id}")
    sessions.close(session_id)
    return Response(status_code=204)


def _same_origin(request: Request) -> bool:
    """False for a browser request from another origin (DNS rebinding), which the spec asks to refuse (403)."""
    origin = request.headers.get("origin")
    return not origin or urlsplit(origin).netloc.lower() == (request.headers.get("host") or "").lower()


def _wants_sse(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "text/event-stream" in accept and "application/json" not in accept and "*/*" not in accept


def _respond(request: Request, payload: Any, status: int, headers: dict[str, str]) -> Response:
    """``payload`` as JSON, or as one SSE ``message`` event when the client accepts only a stream."""
    if _wants_sse(request):
        event = f"event: message\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"
        return Response(event, status_code=status, media_type="text/event-stream",
                         headers={**headers, "Cache-Control": "no-cache"})
    return JSONResponse(payload, status_code=status, headers=headers)


def _rpc_response(request: Request, request_id: Any, error: _RpcError) -> Response:
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": error.code, "message": error.message}}
    return _respond(request, body, error.status, {})


def _error_body(request_id: Any, exc: ToolGymError) -> tuple[dict[str, Any], int]:
    """ToolGym's error as a JSON-RPC error, and the HTTP status of ``toolgym.errors.HTTP_STATUS``."""
    status = http_status(exc)
    code = INVALID_PARAMS if isinstance(exc, ValidationFailed) else INVALID_REQUEST if status == 400 else SERVER_ERROR
    data = {"status": status, **exc.to_wire()}
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": exc.message, "data": data}}, status


class _Call:
    """One POST's messages, answered in order against one episode."""

    def __init__(self, request: Request, manager: EpisodeManager, owner: str, settings: Settings, episode_id: str,
                 sessions: McpSessions) -> None:
        self.request, self.manager, self.owner, self.settings = request, manager, owner, settings
        self.episode_id, self.sessions = episode_id, sessions
        self.new_session: str | None = None

    async def answer(self, message: Any) -> tuple[dict[str, Any] | None, int]:
        """The response to one message (None for a notification or a response) and its HTTP status."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            error = {"code": INVALID_REQUEST, "message": "not a JSON-RPC 2.0 message"}
            return {"jsonrpc": "2.0", "id": None, "error": error}, 400
        method = message.get("method")
        if "id" not in message or method is None:
            return None, 202  # a notification (initialized, cancelled) or a response: nothing to answer
        request_id = message["id"]
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            error = {"code": INVALID_REQUEST, "message": "a request id is a string or an integer"}
            return {"jsonrpc": "2.0", "id": None, "error": error}, 400
        try:
            params = message.get("params", {})
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise ValidationFailed("params must be an object")
            result = await self._dispatch(str(method), params)
            return {"jsonrpc": "2.0", "id": request_id, "result": result}, 200
        except _RpcError as exc:
            return {"jsonrpc": "2.0", "id": request_id, "error": {"code": exc.code, "message": exc.message}}, exc.status
        except ToolGymError as exc:
            count_error(self.request.app, exc)
            if http_status(exc) >= 500:
                log.warning("mcp %s on %s -> %s: %s", method, self.episode_id, exc.code, exc.message)
            return _error_body(request_id, exc)
        except Exception as exc:  # one message's bug must not lose the batch's other answers
            log.exception("mcp %s on %s failed", method, self.episode_id)
            return _error_body(request_id, internal_error(exc))

    async def _dispatch(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "initialize":
            await self.manager.state(self.owner, self.episode_id)  # 404 before a session is opened
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
            self.new_session = self.sessions.open(self.owner, self.episode_id, version)
            return {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "toolgym", "version": __version__},
                "instructions": f"The tools of ToolGym episode {self.episode_id}: each call is one step of the"
                                " episode, and its reward is in the result's structuredContent.",
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": tools_of(await self.manager.state(self.owner, self.episode_id))}
        if method == "tools/call":
            return await self._call_tool(params)
        raise _RpcError(METHOD_NOT_FOUND, f"method {method!r} not found (initialize, ping, tools/list, tools/call)",
                        404)

    async def _call_tool(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        arguments = params.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise ValidationFailed("tools/call needs a tool name and an arguments object")
        meta = params.get("_meta") or {}
        if not isinstance(meta, dict):
            raise ValidationFailed("tools/call: _meta must be an object")
        snapshot = await self.manager.state(self.owner, self.episode_id)
        if name not in {t["name"] for t in tools_of(snapshot)}:
            raise ValidationFailed(f"unknown tool {name!r} in episode {self.episode_id}", tool=name)
        if snapshot.env_id in CODE_TOOL_ENVS:
            code = arguments.get("code")
            if not isinstance(code, str):
                raise ValidationFailed("the python tool needs a string argument 'code'", tool=name)
            action: Any = f"```python\n{code}\n```"
        else:
            function = {"name": name, "arguments": arguments}
            call = {"id": f"mcp-{snapshot.turn}", "type": "function", "function": function}
            action = {"content": None, "tool_calls": [call]}
        body = checked(StepRequest, {"action": action, "expected_turn": meta.get("toolgym/expected_turn")})
        try:
            step = await run_step(self.manager, self.owner, self.settings, self.episode_id, body,
                                  _idempotency_key(meta))
        except EpisodeFinished as exc:
            return {"content": [{"type": "text", "text": exc.message}], "isError": True,
                    "structuredContent": {"error": exc.to_wire()["error"]}}
        return tool_result(step)


def _idempotency_key(meta: dict[str, Any]) -> str | None:
    key = meta.get("toolgym/idempotency_key")
    if key is None:
        return None
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise ValidationFailed("_meta['toolgym/idempotency_key'] must be a string of 1 to 200 characters")
    return key
