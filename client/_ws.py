"""The WebSocket transport of ``AsyncEnvClient(protocol="ws")``: one socket to ``/v1/ws`` for everything.

That one socket carries every reset, step, close and get, however many episodes are open.

Why: an HTTP request costs both sides more than a frame: httpx's request and response
machinery in the client (~1 ms of CPU per request here, flat in the number of episodes since
the lanes of ``_lanes``), header parsing and routing in the server. Over one socket a request
is a frame and an answer is matched to its future by id (``bench/client_scaling.py`` measures
both transports).

This module only moves frames. What to send and how to read the answer stay in ``_core``:
``ws_frame`` turns a ``Call`` into a frame and ``ws_response`` turns the answer back into the
response the HTTP route would have given, so ``Exchange`` retries and raises exactly as over
HTTP. A dropped socket fails the requests in flight on it with an ``httpx`` transport error
(which ``Exchange`` retries when the call is safe to repeat: resets and steps carry their
idempotency key, so the resent frame is the same request); the next request reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from toolgym.client import _core

__all__ = ["WsTransport"]


@dataclass
class _Link:
    """One open socket, its reader task, and the answers still awaited on it."""

    conn: Any
    reader: asyncio.Task[None] | None = None
    pending: dict[int, asyncio.Future[tuple[int, Any]]] = field(default_factory=dict)


class WsTransport:
    """Sends frames over one lazily opened, automatically reopened WebSocket.

    ``send`` returns the answer as an ``httpx.Response``, or raises ``httpx.ConnectError``
    (no socket could be opened), ``httpx.WriteError``/``httpx.ReadError`` (the socket dropped
    before the answer) or ``httpx.ReadTimeout`` (no answer within ``timeout_s``). A refused
    handshake (a wrong key) comes back as the refusal's response, so it raises the same typed
    error as over HTTP.
    """

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        try:
            from websockets.asyncio.client import connect
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "AsyncEnvClient(protocol='ws') needs the 'websockets' package: pip install websockets"
            ) from exc
        self._connect = connect
        self.url = _core.ws_url(base_url)
        self._headers = dict(headers)
        self._timeout_s = timeout_s
        self._link: _Link | None = None
        self._opening = asyncio.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    async def send(self, frame: dict[str, Any]) -> httpx.Response:
        """Send one request frame (its ``id`` is set here) and await its answer."""
        link = await self._open()
        if isinstance(link, httpx.Response):
            return link
        frame_id = next(self._ids)
        answer: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        link.pending[frame_id] = answer
        try:
            await link.conn.send(json.dumps({"id": frame_id, **frame}, ensure_ascii=False))
        except Exception as exc:
            link.pending.pop(frame_id, None)
            self._drop(link, exc)
            raise httpx.WriteError(f"the WebSocket to {self.url} closed while sending: {exc!r}") from exc
        try:
            status, body = await asyncio.wait_for(answer, self._timeout_s)
        except asyncio.TimeoutError as exc:  # not yet the builtin TimeoutError on Python 3.10
            link.pending.pop(frame_id, None)
            raise httpx.ReadTimeout(f"no answer on {self.url} within {self._timeout_s} s (timeout_s)") from exc
        return _core.ws_response(status, body)

    async def aclose(self) -> None:
        """Close the socket (idempotent); requests still awaiting an answer fail."""
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            self._drop(link, ConnectionError("the client was closed"))
            await link.conn.close()
            if link.reader is not None:
                await asyncio.gather(link.reader, return_exceptions=True)

    async def _open(self) -> _Link | httpx.Response:
        link = self._link
        if link is not None:
            return link
        async with self._opening:
            if self._link is not None:
                return self._link
            if self._closed:
                raise httpx.ConnectError("the client is closed")
            from websockets.exceptions import InvalidStatus

            try:
                conn = await self._connect(
                    self.url, additional_headers=self._headers, open_timeout=self._timeout_s,
                    compression=None, max_size=None, ping_interval=20, ping_timeout=60,
                )
            except InvalidStatus as exc:  # refused: the answer is an HTTP error (401 ...)
                response = exc.response
                return httpx.Response(response.status_code, content=bytes(response.body or b""),
                                      headers=list(response.headers.raw_items()))
            except Exception as exc:  # refused connection, timeout, bad handshake, bad URL
                raise httpx.ConnectError(f"cannot open a WebSocket to {self.url}: {exc!r}") from exc
            link = _Link(conn)
            link.reader = asyncio.create_task(self._read(link))
            self._link = link
            return link

    async def _read(self, link: _Link) -> None:
        """Hand each answer to its request until the socket closes."""
        error: BaseException = ConnectionError("the server closed the WebSocket")
        try:
            async for message in link.conn:
                answer = json.loads(message)
                waiter = link.pending.pop(answer.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result((int(answer["status"]), answer.get("body")))
        except Exception as exc:
            error = exc
        self._drop(link, error)

    def _drop(self, link: _Link, error: BaseException) -> None:
        """Forget ``link`` and fail what still waits on it (those requests may be retried)."""
        if self._link is link:
            self._link = None
        pending, link.pending = link.pending, {}
        for waiter in pending.values():
            if not waiter.done():
                failure = httpx.ReadError(f"the WebSocket to {self.url} closed before the answer: {error!r}")
                failure.__cause__ = error
                waiter.set_exception(failure)
