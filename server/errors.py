"""Where every error becomes HTTP: one place, one JSON shape.

``{"error": {"code", "message", "retryable", "details"?}}`` with the status from
``toolgym.errors.HTTP_STATUS``; 503s and 429s carry ``Retry-After``. FastAPI's own errors (bad JSON,
schema, unknown route) are translated into the same shape here.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolgym.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ToolGymError,
    Unavailable,
    ValidationFailed,
    http_status,
)

__all__ = ["BodySizeLimit", "error_response", "install_error_handlers", "internal_error", "validation_error"]

log = logging.getLogger(__name__)

QUOTA_RETRY_AFTER_S = 1.0
"""``Retry-After`` of a per-key quota refusal: no sooner than this may a slot have been freed."""


def error_response(exc: ToolGymError, request: Request | None = None) -> JSONResponse:
    """The JSON response of ``exc``: its status from ``HTTP_STATUS``, and ``Retry-After`` on a 503 or 429.

    A rate limit's ``Retry-After`` is the wait for the key's next token, rounded up to whole
    seconds (the body's ``details.retry_after_s`` is exact). A per-key quota frees only when the
    key closes an episode, so its ``Retry-After`` is a polite floor (``QUOTA_RETRY_AFTER_S``).
    With ``request``, the error is also counted in the app's metrics by its code.
    """
    headers = {}
    retry_after: float | None = None
    if isinstance(exc, Unavailable | RateLimited):
        retry_after = exc.retry_after_s
    elif isinstance(exc, QuotaExceeded):
        retry_after = QUOTA_RETRY_AFTER_S
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if request is not None:
        count_error(request.app, exc)
    return JSONResponse(exc.to_wire(), status_code=http_status(exc), headers=headers)


def count_error(app: Any, exc: ToolGymError) -> None:
    """Count ``exc`` in the app's metrics by its code (HTTP answers and WebSocket frames alike)."""
    metrics = getattr(app.state, "metrics", None)
    if metrics is not None:
        metrics.http_errors.labels(exc.code).inc()


async def refuse_websocket(websocket: WebSocket, exc: ToolGymError) -> None:
    """Refuse a WebSocket handshake with ``exc``: its HTTP status and error body where the server can send one.

    Uvicorn's denial extension lets the handshake answer as HTTP would (401, 404 ...); a server
    without it can only close before accepting, which clients see as a 403.
    """
    count_error(websocket.app, exc)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(exc))
    else:
        await websocket.close(code=1008, reason=exc.message[:120])


def _clean(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for err in errors[:20]:
        out.append({"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")),
                    "type": str(err.get("type", ""))})
    return out


def validation_error(errors: list[Any]) -> ToolGymError:
    """The error of a request that fails its schema (FastAPI's ``RequestValidationError``, or a WebSocket frame).

    ``BadRequest`` (400) when the body is not JSON, else ``ValidationFailed`` (422) naming the
    first field. One function, so both routes word it alike.
    """
    cleaned = _clean(errors)
    if any(e["type"] == "json_invalid" for e in cleaned):
        return BadRequest("the request body is not valid JSON", errors=cleaned)
    first = cleaned[0] if cleaned else {"loc": [], "msg": "invalid request"}
    where = ".".join(p for p in first["loc"] if p != "body") or "body"
    return ValidationFailed(f"{where}: {first['msg']}", errors=cleaned)


def internal_error(exc: BaseException) -> ToolGymError:
    """What a caller sees of a bug: the exception's class only (the server log has the rest)."""
    return ToolGymError(f"internal error ({type(exc).__name__}); the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error, ours and FastAPI's, to the one JSON error body; document it.

    The OpenAPI document then lists that body for every status an operation may answer.

    Args:
        app: The app to equip; called once by ``create_app``.
    """
    @app.exception_handler(ToolGymError)
    async def _toolgym(request: Request, exc: ToolGymError) -> JSONResponse:
        if http_status(exc) >= 500:
            log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(exc.errors())), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, _BodyTooLarge):
            # FastAPI turns any error while reading a body into a 400; a streamed (chunked)
            # body over the limit is still a 413.
            return error_response(exc.__cause__.error, request)
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.method} {request.url.path}"), request)
        if exc.status_code == 400:
            return error_response(BadRequest(str(exc.detail)), request)
        err = ToolGymError(str(exc.detail))
        err.code = {405: "method_not_allowed", 426: "upgrade_required"}.get(exc.status_code, "http_error")
        return JSONResponse(err.to_wire(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(internal_error(exc), request)

    _document_errors(app)


_ERROR_REF = "#/components/schemas/ErrorResponse"
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def _error_content(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}}}


def _document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document say what the handlers above really send.

    Every operation gets a ``default`` response (any status it does not list: 401, 404, 409,
    413, 429, 503, ... all carry the one error body), and FastAPI's own 422 schema
    (``{"detail": [...]}``), which this server never sends, is replaced by the error body.
    Without this a generated client, or a contract test, rejects every error answer.
    """
    from toolgym.server.models import ErrorResponse

    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        if "ErrorResponse" not in schemas:
            body = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(body.pop("$defs", {}))
            schemas["ErrorResponse"] = body
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                validation = responses.get("422", {}).get("content", {}).get("application/json", {})
                if validation.get("schema", {}).get("$ref") == _FASTAPI_422:
                    responses["422"] = _error_content("validation_failed: the request does not match the schema")
                responses.setdefault("default", _error_content("An error: code, message, retryable, details"))
        if _FASTAPI_422 not in json.dumps(schema.get("paths", {})):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before the app reads them whole.

    This holds whether or not they declare a Content-Length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: refuse a declared Content-Length over the cap at once, else count the body as it streams.

        A streamed body that crosses the cap stops the app; the 413 is sent only if the app has not
        started its response yet.
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(
            f"request body over {self.max_bytes} bytes (max_request_bytes)", max_bytes=self.max_bytes
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_bytes:
                        await error_response(too_large)(scope, receive, send)
                        return
                except ValueError:
                    await error_response(BadRequest("bad Content-Length header"))(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(too_large)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await error_response(too_large)(scope, receive, send)


class _BodyTooLarge(Exception):
    def __init__(self, error: PayloadTooLarge) -> None:
        super().__init__(error.message)
        self.error = error
