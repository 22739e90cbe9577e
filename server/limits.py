"""Per-key request limits and the request content-type check, both before any route's work.

``RateLimiter`` is a token bucket per owner id (an API key's hash): ``rate`` tokens a second,
holding at most ``burst`` (one second's worth, at least one), so a key may send a short burst
and then its steady rate. Every authenticated HTTP request and every WebSocket frame takes a
token; without one the request is refused with ``RateLimited`` (429), whose ``retry_after_s``
is the time until the next token. ``rate == 0`` switches it off.

``ConcurrencyLimit`` bounds the HTTP requests in flight (``max_concurrent_requests``): one
more is refused at once with ``Overloaded`` (503, Retry-After), so overload is a fast answer,
never a queue that ends in a client's timeout. Health and metrics are not counted, so probes
still see the server.

``ContentTypeGuard`` refuses a request body whose declared ``Content-Type`` the routes cannot
read with ``UnsupportedMediaType`` (415): JSON everywhere, JSONL (``application/x-ndjson``)
only on the task upload route. A body with no ``Content-Type`` is refused too (the JSON routes
cannot read it), except on the task upload, which reads it as JSON.
"""

from __future__ import annotations

import math
import re
import threading
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from toolgym.errors import Overloaded, RateLimited, UnsupportedMediaType
from toolgym.server.errors import error_response
from toolgym.server.routes.envs import NDJSON_TYPES

__all__ = ["ConcurrencyLimit", "ContentTypeGuard", "RateLimiter"]

JSON_TYPES = frozenset({"application/json"})
_TASK_UPLOAD = re.compile(r"^/v1/envs/.+/tasks/?$")
"""The one route that also reads JSONL (``POST /v1/envs/{env_id}/tasks``)."""


class RateLimiter:
    """A token bucket per owner id: ``rate`` requests a second, bursts of up to ``burst``.

    Its callers (the ``OwnerDep`` dependency, each WebSocket frame) run on the event loop; the
    lock keeps it safe from any thread all the same. Buckets are kept per owner, and
    owners are few (one per configured key, plus ``anonymous``), so none is ever dropped.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether a rate is set (``rate_limit_per_key`` > 0)."""
        return self.rate > 0

    def take(self, owner: str) -> None:
        """Take one token of ``owner``'s bucket, or raise ``RateLimited`` with the wait for the next."""
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(owner, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[owner] = (tokens - 1.0, now)
                return
            self._buckets[owner] = (tokens, now)
        wait = (1.0 - tokens) / self.rate
        raise RateLimited(
            f"this API key is over its rate of {self.rate:g} requests/s (rate_limit_per_key);"
            f" retry in {math.ceil(wait * 1000) / 1000:g} s",
            retry_after_s=round(wait, 3), rate_per_s=self.rate, burst=self.burst,
        )


class ContentTypeGuard:
    """ASGI middleware: a body whose ``Content-Type`` is neither JSON nor (on the task upload) JSONL is a 415.

    It looks only at headers, so it costs nothing for a good request and refuses a bad one
    before its body is read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: check the declared media type of a request that carries a body."""
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers", []))
            has_body = headers.get(b"content-length", b"0").strip() not in (b"0", b"") or (
                b"transfer-encoding" in headers
            )
            raw = headers.get(b"content-type", b"").decode("latin-1")
            media = raw.split(";", 1)[0].strip().lower()
            upload = bool(_TASK_UPLOAD.match(scope["path"]))
            allowed = JSON_TYPES | frozenset(NDJSON_TYPES) if upload else JSON_TYPES
            if has_body and media not in allowed and (media or not upload):
                what = f"content type {media!r}" if media else "a body without a Content-Type"
                error = UnsupportedMediaType(
                    f"unsupported {what}; send {' or '.join(sorted(allowed))}",
                    content_type=media, accepted=sorted(allowed),
                )
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: never counted, never refused for load."""


class ConcurrencyLimit:
    """ASGI middleware: at most ``max_requests`` HTTP requests in flight; one more is a 503 ``overloaded``.

    The count lives on the event loop's thread, so it needs no lock.
    """

    def __init__(self, app: ASGIApp, max_requests: int, retry_after_s: float = 1.0) -> None:
        self.app = app
        self.max_requests = max_requests
        self.retry_after_s = retry_after_s
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: count the request in, or refuse it when the server is full."""
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_requests:
            error = Overloaded(
                f"the server has {self.max_requests} requests in flight (max_concurrent_requests); retry shortly",
                retry_after_s=self.retry_after_s,
            )
            if scope["type"] == "http" or "websocket.http.response" in scope.get("extensions", {}):
                await error_response(error)(scope, receive, send)  # a handshake is denied with the same 503
            else:  # a server without the denial extension: close before accepting
                await send({"type": "websocket.close", "code": 1013, "reason": "overloaded"})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
