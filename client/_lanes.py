"""The HTTP transport under ``AsyncEnvClient``: at most ``limit`` requests out, each on a lane of its own.

Why not one httpx pool: httpcore 1.0.9's pool, on every request and every answer, walks all its
connections (a socket-readability syscall per idle one, and a count of all connections per idle
one) and every queued request, and hands one idle connection to several queued requests that
then retry. Its CPU per request grows with the number of requests out, and one client slowed
down as its rollouts grew (``bench/client_scaling.py``, docs in ``bench/README.md`` section 5).

Here every lane is an ``httpx.AsyncHTTPTransport`` limited to one keep-alive connection and
never given more than one request at a time, so its pool has nothing to scan. A request takes
a free lane (the most recently used, whose connection is the likeliest still open) or makes
one while fewer than ``limit`` exist; otherwise it waits in a first-come-first-served queue
that costs O(1) per request and per answer. The lane is handed on when the answer's body is
closed (httpx closes it once read), so ``limit`` is both the connection count and the number of
requests the server sees at once from this client.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["LaneTransport"]


class LaneTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends at most ``limit`` requests at once, one per lane.

    Args:
        limit: the most requests out at once (and lanes made); at least 1.
        make_lane: builds one lane; called lazily, at most ``limit`` times. It may return the
            same transport every time (a caller's own transport): the limit still holds, and
            ``aclose`` closes each distinct lane once.

    A request that finds no free lane waits at most the request's ``pool`` timeout (httpx's
    wait for a pooled connection) and then raises ``httpx.PoolTimeout``, unsent. A waiter
    cancelled (or timed out) holds no lane: one handed to it at that moment is handed on.
    """

    def __init__(self, limit: int, make_lane: Callable[[], httpx.AsyncBaseTransport]) -> None:
        if limit < 1:
            raise ValueError(f"the limit on requests out at once is at least 1, not {limit}")
        self.limit = limit
        self._make_lane = make_lane
        self._lanes: list[httpx.AsyncBaseTransport] = []
        self._free: list[httpx.AsyncBaseTransport] = []
        self._waiters: deque[asyncio.Future[httpx.AsyncBaseTransport]] = deque()

    @property
    def in_flight(self) -> int:
        """Requests out now (lanes taken); what a test reads to see the limit held and no lane lost."""
        return len(self._lanes) - len(self._free)

    @property
    def waiting(self) -> int:
        """Requests queued for a lane now (a cancelled waiter stops counting at once)."""
        return sum(1 for w in self._waiters if not w.done())

    async def _take(self, timeout_s: float | None) -> httpx.AsyncBaseTransport:
        if self._free:
            return self._free.pop()
        if len(self._lanes) < self.limit:
            lane = self._make_lane()
            self._lanes.append(lane)
            return lane
        waiter: asyncio.Future[httpx.AsyncBaseTransport] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except BaseException as exc:
            # Timed out or cancelled: a lane given to us in that same instant goes to the next in line.
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())
            waiter.cancel()  # no-op once done; _give skips a cancelled waiter
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout(f"no free connection within {timeout_s} s "
                                        f"({self.limit} requests were out)") from None
            raise

    def _give(self, lane: httpx.AsyncBaseTransport) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(lane)
                return
        self._free.append(lane)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a free lane; the lane is handed on when the answer's body is closed."""
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        lane = await self._take(timeout.get("pool"))
        try:
            response = await lane.handle_async_request(request)
        except BaseException:
            self._give(lane)
            raise
        response.stream = _LaneStream(response.stream, lambda: self._give(lane))
        return response

    async def aclose(self) -> None:
        """Close every lane once (the same transport given as every lane is closed once)."""
        seen: set[int] = set()
        for lane in self._lanes:
            if id(lane) not in seen:
                seen.add(id(lane))
                await lane.aclose()


class _LaneStream(httpx.AsyncByteStream):
    """An answer's body that hands its lane on when closed (once, even if closed twice)."""

    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert isinstance(self._inner, httpx.AsyncByteStream)
        async for part in self._inner:
            yield part

    async def aclose(self) -> None:
        try:
            if isinstance(self._inner, httpx.AsyncByteStream):
                await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
