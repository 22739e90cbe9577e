"""The MCP endpoint's wire pieces: protocol constants, sessions, the episode's tool list, a step as a tool result.

``toolgym.server.routes.mcp`` (the route) says what the endpoint does and why; this module holds
what it answers with, as ``_openenv_wire`` does for the OpenEnv routes. The JSON shapes are
MCP's (https://modelcontextprotocol.io/specification/2025-06-18/server/tools): a tool is
``{name, description, inputSchema}``, a call's result ``{content, isError, structuredContent, _meta}``.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from toolgym.envs.tooluse.verifier import error_text
from toolgym.server.episode_types import EpisodeSnapshot
from toolgym.server.models import StepResponse

__all__ = [
    "CODE_TOOL_ENVS", "INVALID_PARAMS", "INVALID_REQUEST", "METHOD_NOT_FOUND", "OPENAPI_REQUEST", "OPENAPI_RESPONSES",
    "PARSE_ERROR", "PROTOCOL_VERSIONS", "SERVER_ERROR", "SESSION_HEADER", "VERSION_HEADER", "McpSessions",
    "tool_result", "tools_of",
]

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
"""The handshake revisions served; ``initialize`` echoes the client's when it is one of them, else the last."""
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
MAX_SESSIONS = 10_000
"""Sessions remembered at once; past it the oldest is forgotten (its client gets 404 and re-initializes)."""
CODE_TOOL_ENVS = frozenset({"toolgym/CodeMath-v0"})
"""Envs whose action is a code block rather than tool calls: they get the one ``python`` tool."""
TOOL_ERROR_PREFIX = error_text("", "").removesuffix(": ")
"""How ToolUse begins the text of a failed call (FTRL's wording, from its one source)."""
ERROR_STATUSES = frozenset({"invalid_action", "timeout", "infra_error"})
"""Step statuses that make a call's result ``isError``."""

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, SERVER_ERROR = -32700, -32600, -32601, -32602, -32000

PYTHON_TOOL = {
    "name": "python",
    "description": "Run Python code in the episode's sandbox; what it prints is the output. Print \\boxed{answer}"
                   " (or call final_answer) to answer: that ends the episode.",
    "inputSchema": {"type": "object", "properties": {"code": {"type": "string", "description": "Python source."}},
                    "required": ["code"]},
}


@dataclass(frozen=True)
class _Session:
    owner: str
    episode_id: str
    version: str


class McpSessions:
    """The open MCP sessions of one app: id -> (owner, episode, protocol version), oldest forgotten first.

    In memory on purpose: a session is only a handshake's memory, while the episode lives in
    the store; after a restart the client gets 404 and re-initializes, as the spec prescribes.
    """

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._limit = limit

    def open(self, owner: str, episode_id: str, version: str) -> str:
        """A new session id for ``owner``'s episode (unguessable: it stands for nothing but the key)."""
        session_id = secrets.token_urlsafe(24)
        self._sessions[session_id] = _Session(owner, episode_id, version)
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str, owner: str, episode_id: str) -> _Session | None:
        """The session, or None when unknown, ended, or opened by another key or for another episode."""
        session = self._sessions.get(session_id)
        if session is None or session.owner != owner or session.episode_id != episode_id:
            return None
        return session

    def close(self, session_id: str) -> None:
        """Forget a session (DELETE); later requests naming it get 404."""
        self._sessions.pop(session_id, None)


def tools_of(snapshot: EpisodeSnapshot) -> list[dict[str, Any]]:
    """The MCP tool list of an episode: its reset's OpenAI tool schemas, or ``python`` for a code env."""
    if snapshot.env_id in CODE_TOOL_ENVS:
        return [dict(PYTHON_TOOL)]
    tools = []
    for spec in snapshot.reset.get("observation", {}).get("tools") or []:
        function = spec.get("function", spec) if isinstance(spec, dict) else {}
        name = function.get("name")
        if not isinstance(name, str):
            continue
        schema = dict(function.get("parameters") or {})
        if schema.get("type") in (None, "dict"):  # BFCL writes "dict"; MCP requires an object schema
            schema["type"] = "object"
        tools.append({"name": name, "description": str(function.get("description") or ""), "inputSchema": schema})
    return tools


# --- the OpenAPI entry: JSON-RPC bodies, not ToolGym's -------------------------------------------
_ID = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
_RPC_REQUEST = {
    "type": "object", "required": ["jsonrpc", "method"],
    "properties": {"jsonrpc": {"const": "2.0"}, "id": _ID, "method": {"type": "string"},
                   "params": {"type": "object"}},
}
_RPC_ANSWER = {
    "type": "object", "required": ["jsonrpc", "id"],
    "properties": {"jsonrpc": {"const": "2.0"}, "id": _ID, "result": {"type": "object"},
                   "error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}}}},
}
OPENAPI_REQUEST = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "anyOf": [_RPC_REQUEST, {"type": "array", "items": _RPC_REQUEST, "minItems": 1}]}}}},
}
OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The JSON-RPC answer(s), as JSON or as one SSE event (per the Accept header).",
          "content": {"application/json": {"schema": {"anyOf": [_RPC_ANSWER, {"type": "array", "items": _RPC_ANSWER}]}},
                      "text/event-stream": {"schema": {"type": "string"}}}},
    202: {"description": "Only notifications or responses were sent: nothing to answer."},
    "default": {"description": "A JSON-RPC error with the HTTP status of its ToolGym error (data.status, data.error),"
                               " or ToolGym's error body for a request refused before it is read (401, 413, 415).",
                "content": {"application/json": {"schema": {"anyOf": [
                    _RPC_ANSWER, {"type": "array", "items": _RPC_ANSWER},
                    {"$ref": "#/components/schemas/ErrorResponse"}]}}}},
}


def tool_result(step: StepResponse) -> dict[str, Any]:
    """A step as a tool result: the output text, ``isError``, and the reward where a client reads it."""
    messages = step.observation.messages
    texts = [str(m.get("content") or "") for m in messages]
    status = str(step.info.get("status", "ok"))
    done = step.terminated or step.truncated
    if not messages:
        texts = [f"reward {step.reward:g}; the episode has " + (f"ended ({step.info.get('reason')})" if done
                                                                else "not ended")]
    failed = status in ERROR_STATUSES or any(t.startswith(TOOL_ERROR_PREFIX) for t in texts)
    summary = {"output": "\n".join(texts), "reward": step.reward, "terminated": step.terminated,
               "truncated": step.truncated, "status": status, "reason": step.info.get("reason")}
    return {
        "content": [{"type": "text", "text": t} for t in texts],
        "isError": failed,
        "structuredContent": summary,
        "_meta": {"toolgym/step": step.model_dump(mode="json")},
    }
