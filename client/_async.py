"""``AsyncEnvClient``: the asyncio client, for trainers that run many rollouts at once.

It shares every request, response and retry rule with ``EnvClient`` (``_core``); only the
sending loop is its own. HTTP requests go through ``_lanes`` (at most ``max_connections`` out,
one connection each, the rest queued). With ``protocol="ws"`` resets, steps, closes and gets
travel over one WebSocket (``_ws``) instead: the same calls, another transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx

from toolgym.client import _core
from toolgym.client._core import Call, ResetResult, RetryPolicy, StepResult
from toolgym.client._lanes import LaneTransport
from toolgym.client._ws import WsTransport
from toolgym.errors import ToolGymError

__all__ = ["AsyncEnvClient", "DEFAULT_MAX_CONNECTIONS"]

DEFAULT_MAX_CONNECTIONS = 256
"""How many HTTP requests one ``AsyncEnvClient`` has out at once by default; the rest wait their turn.

The client's CPU per request does not depend on it, and 256 served FunctionCall episodes as fast
as 1,024 did (``bench/client_scaling.py``) while bounding the sockets one client holds.
"""


class AsyncEnvClient:
    """The async twin of ``EnvClient``: same methods, awaited.

    ``aclose`` (or ``async with``) releases the connections (and the WebSocket).

    Over HTTP (the default) at most ``max_connections`` requests are out at once, each alone on
    a keep-alive connection of its own (``_lanes``); more wait their turn in the client, first
    come first served, each at most ``timeout_s``: then, unsent, it fails as a request finding
    httpx's pool full does (``httpx.PoolTimeout``: ``Unavailable``, retried when safe to repeat).
    The client's CPU per request stays flat however many episodes share it
    (``bench/client_scaling.py``). The limit is also how many requests the server sees at once
    from this client: raise it when more than 256 slow steps (long tool or code runs) must run
    at the same time. A ``transport`` given serves every lane, under the same limit.

    ``protocol="ws"`` sends ``reset``, ``step``, ``close`` and ``episode`` over one WebSocket
    session (``/v1/ws``, needs the ``websockets`` package) rather than one HTTP request each:
    it costs the client and the server less per request than HTTP (one frame, no request
    parsing), so it serves more episodes per second from one client. The answers, errors and
    retries are the same; a dropped socket is reopened and its requests resent with their
    idempotency keys. Other methods use HTTP either way; episodes are the key's, so both
    transports reach them.

    Without ``base_url`` or ``api_key``, ``TOOLGYM_BASE_URL`` and ``TOOLGYM_API_KEY`` are read
    (then ``http://127.0.0.1:8000`` and no key), as by ``EnvClient`` and every ``toolgym`` command.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        protocol: Literal["http", "ws"] = "http",
    ) -> None:
        if protocol not in ("http", "ws"):
            raise ValueError(f"protocol is 'http' or 'ws', not {protocol!r}")
        options = _core.http_client_options(base_url, api_key, timeout_s, max_connections)
        del options["limits"]  # the lanes are the pool: one connection each, max_connections of them
        self._lanes = LaneTransport(max_connections, _lane_factory(transport))
        self._http = httpx.AsyncClient(transport=self._lanes, **options)
        self._retry = retry or RetryPolicy()
        self._ws = WsTransport(str(options["base_url"]), options["headers"], timeout_s) if protocol == "ws" else None

    async def __aenter__(self) -> AsyncEnvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool and the WebSocket (idempotent).

        Open episodes stay open on the server.
        """
        if self._ws is not None:
            await self._ws.aclose()
        await self._http.aclose()

    async def _json(self, call: Call, retry: RetryPolicy | None = None) -> Any:
        """Send ``call`` (retrying as the policy says, ``retry`` or the client's) and return its result."""
        exchange = _core.Exchange(call, retry or self._retry)
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._send(call)
            except httpx.TransportError as exc:
                outcome = exc
            result = exchange.settle(outcome)
            if not isinstance(result, _core.Retry):
                return result
            await asyncio.sleep(result.delay_s)

    async def _send(self, call: Call) -> httpx.Response:
        """One attempt: over the WebSocket when the session has the call's op, else HTTP."""
        if self._ws is not None:
            frame = _core.ws_frame(call)
            if frame is not None:
                return await self._ws.send(frame)
        return await self._http.request(call.method, call.path, **call.request_kwargs())

    # --- server and envs ------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        return await self._json(_core.health_call())  # type: ignore[no-any-return]

    async def version(self) -> dict[str, Any]:
        return await self._json(_core.version_call())  # type: ignore[no-any-return]

    async def envs(self) -> list[dict[str, Any]]:
        return await self._json(_core.envs_call())  # type: ignore[no-any-return]

    async def tasks(self, env_id: str, split: str | None = None, offset: int = 0,
                    limit: int = 100) -> dict[str, Any]:
        return await self._json(_core.tasks_call(env_id, split, offset, limit))  # type: ignore[no-any-return]

    async def register_tasks(self, env_id: str, records: list[dict[str, Any]]) -> list[str]:
        return await self._json(_core.register_tasks_call(env_id, records))  # type: ignore[no-any-return]

    async def task_stats(self, env_id: str) -> list[dict[str, Any]]:
        return await self._json(_core.task_stats_call(env_id))  # type: ignore[no-any-return]

    # --- episodes -------------------------------------------------------------------------------
    async def reset(self, env_id: str, task_id: str | None = None, *, seed: int | None = None,
                    options: dict[str, Any] | None = None) -> ResetResult:
        return await self._json(_core.reset_call(env_id, task_id, seed, options))  # type: ignore[no-any-return]

    async def step(self, episode_id: str, action: Any, *, expected_turn: int | None = None,
                   idempotency_key: str | None = None, mean_logprob: float | None = None,
                   token_ids: Sequence[int] | None = None, logprobs: Sequence[float] | None = None) -> StepResult:
        """Send one action; ``token_ids`` and ``logprobs`` are stored with the step (see ``EnvClient.step``)."""
        call = _core.step_call(episode_id, action, expected_turn, idempotency_key, mean_logprob,
                               _core.sample_body(token_ids, logprobs))
        return await self._json(call)  # type: ignore[no-any-return]

    async def batch_reset(self, resets: list[dict[str, Any]]) -> list[ResetResult | ToolGymError]:
        """Many resets in one request; one result per item (see ``EnvClient.batch_reset``)."""
        return await self._json(_core.batch_reset_call(resets))  # type: ignore[no-any-return]

    async def batch_step(self, steps: list[dict[str, Any]]) -> list[StepResult | ToolGymError]:
        """Steps on different episodes in one request; one result per item."""
        return await self._json(_core.batch_step_call(steps))  # type: ignore[no-any-return]

    async def episode(self, episode_id: str) -> dict[str, Any]:
        return await self._json(_core.episode_call(episode_id))  # type: ignore[no-any-return]

    async def episodes(self, status: str | None = None, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return await self._json(_core.episodes_call(status, offset, limit))  # type: ignore[no-any-return]

    async def trajectory(self, episode_id: str) -> list[dict[str, Any]]:
        return await self._json(_core.trajectory_call(episode_id))  # type: ignore[no-any-return]

    async def fork(self, episode_id: str, turn: int | None = None) -> ResetResult:
        return await self._json(_core.fork_call(episode_id, turn))  # type: ignore[no-any-return]

    async def close(self, episode_id: str) -> None:
        await self._json(_core.close_call(episode_id))


def _lane_factory(transport: httpx.AsyncBaseTransport | None) -> Callable[[], httpx.AsyncBaseTransport]:
    """What makes one lane: a one-connection httpx transport, or the caller's own ``transport``.

    The lanes share one TLS context (making one costs ~30 ms). A caller's transport is every
    lane at once: its own pool then decides how requests share connections, under the same limit.
    """
    if transport is not None:
        return lambda: transport
    tls = httpx.create_ssl_context()
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return lambda: httpx.AsyncHTTPTransport(verify=tls, limits=one)
