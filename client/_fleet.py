"""``FleetClient`` and ``AsyncFleetClient``: one client over several ToolGym servers.

For trainers without Ray or Kubernetes' help (docs/deploy.md). Resets are spread over the
servers and fail over when one refuses or is down; every later call on an episode goes to the
server that created it; an episode whose server stopped answering raises ``EpisodeLost`` (after
the retry policy's bounded attempts, and at once for the episodes of a server already found
down). The routing rules live in ``_routing`` and are shared by both clients; each only sends
and sleeps. Server-wide calls (tasks, batches, listing) stay per server: ``clients`` holds one
``EnvClient`` per base URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from toolgym.client import _core
from toolgym.client._async import DEFAULT_MAX_CONNECTIONS, AsyncEnvClient
from toolgym.client._core import ResetResult, RetryPolicy, StepResult
from toolgym.client._routing import NO_RETRY, ResetPlan, Routing
from toolgym.client._sync import EnvClient
from toolgym.errors import EpisodeLost, ToolGymError

__all__ = ["AsyncFleetClient", "FleetClient"]

T = TypeVar("T")


class FleetClient:
    """Several ToolGym servers as one, from a trainer's side (blocking; safe across threads).

    Args:
        base_urls: the servers, e.g. each replica's own address on Kubernetes
            (``http://toolgym-server-0.toolgym-server.toolgym:8000`` ...), never a load
            balancer that would spread one episode's steps over servers that do not hold it.
        api_key: the bearer key every server accepts.
        retry: how often a reset goes round the whole fleet when all servers refuse, and how
            each later call is retried on its own server.
    """

    def __init__(self, base_urls: list[str], api_key: str | None = None, *, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, max_connections: int = 256) -> None:
        self._routing = Routing(base_urls)
        self._retry = retry or RetryPolicy()
        self.clients = tuple(EnvClient(s.base_url, api_key, timeout_s=timeout_s, retry=self._retry,
                                       max_connections=max_connections) for s in self._routing.servers)

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_client()

    def close_client(self) -> None:
        """Close every server's connection pool (idempotent); open episodes stay open."""
        for client in self.clients:
            client.close_client()

    def base_url_of(self, episode_id: str) -> str:
        """The address of the server that holds ``episode_id``."""
        return self._routing.servers[self._routing.owner(episode_id)].base_url

    def _on(self, episode_id: str, send: Callable[[EnvClient], T]) -> T:
        index = self._routing.owner(episode_id)
        try:
            return send(self.clients[index])
        except ToolGymError as exc:
            raise self._routing.failed(episode_id, index, exc) from exc

    def reset(self, env_id: str, task_id: str | None = None, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> ResetResult:
        """Start an episode on the least loaded server that takes it (see ``EnvClient.reset``)."""
        call = _core.reset_call(env_id, task_id, seed, options)
        plan = ResetPlan(self._routing, self._retry)
        while True:
            index = plan.next()
            if isinstance(index, _core.Retry):
                time.sleep(index.delay_s)
                continue
            try:
                result = self.clients[index]._json(call, retry=NO_RETRY)
            except ToolGymError as exc:
                plan.failed(index, exc)
                continue
            return plan.done(index, result)

    def step(self, episode_id: str, action: Any, *, expected_turn: int | None = None,
             idempotency_key: str | None = None, mean_logprob: float | None = None,
             token_ids: Sequence[int] | None = None, logprobs: Sequence[float] | None = None) -> StepResult:
        """One action, on the episode's own server (see ``EnvClient.step``)."""
        result = self._on(episode_id, lambda c: c.step(episode_id, action, expected_turn=expected_turn,
                                                       idempotency_key=idempotency_key, mean_logprob=mean_logprob,
                                                       token_ids=token_ids, logprobs=logprobs))
        return self._routing.stepped(episode_id, result)

    def episode(self, episode_id: str) -> dict[str, Any]:
        """The episode's state, from its own server."""
        return self._on(episode_id, lambda c: c.episode(episode_id))

    def trajectory(self, episode_id: str) -> list[dict[str, Any]]:
        """The episode's trajectory records, from its own server."""
        return self._on(episode_id, lambda c: c.trajectory(episode_id))

    def fork(self, episode_id: str, turn: int | None = None) -> ResetResult:
        """A new episode at ``turn`` of this one; it lives on the same server."""
        index = self._routing.owner(episode_id)
        result = self._on(episode_id, lambda c: c.fork(episode_id, turn))
        self._routing.opened(index, result.episode_id)
        return result

    def close(self, episode_id: str) -> None:
        """End the episode on its own server and destroy its sandbox.

        An episode lost with its server is already over: closing it is a no-op.
        """
        try:
            self._on(episode_id, lambda c: c.close(episode_id))
        except EpisodeLost:
            pass
        self._routing.ended(episode_id)


class AsyncFleetClient:
    """``FleetClient`` for asyncio: the same routing, over ``AsyncEnvClient``s.

    ``protocol="ws"`` keeps one WebSocket session per server; ``max_connections`` is each
    server's ``AsyncEnvClient`` limit on HTTP requests out at once.
    """

    def __init__(self, base_urls: list[str], api_key: str | None = None, *, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 protocol: Literal["http", "ws"] = "http") -> None:
        self._routing = Routing(base_urls)
        self._retry = retry or RetryPolicy()
        self.clients = tuple(AsyncEnvClient(s.base_url, api_key, timeout_s=timeout_s, retry=self._retry,
                                            max_connections=max_connections, protocol=protocol)
                             for s in self._routing.servers)

    async def __aenter__(self) -> AsyncFleetClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every server's connections (idempotent); open episodes stay open."""
        for client in self.clients:
            await client.aclose()

    def base_url_of(self, episode_id: str) -> str:
        """The address of the server that holds ``episode_id``."""
        return self._routing.servers[self._routing.owner(episode_id)].base_url

    async def _on(self, episode_id: str, send: Callable[[AsyncEnvClient], Awaitable[T]]) -> T:
        index = self._routing.owner(episode_id)
        try:
            return await send(self.clients[index])
        except ToolGymError as exc:
            raise self._routing.failed(episode_id, index, exc) from exc

    async def reset(self, env_id: str, task_id: str | None = None, *, seed: int | None = None,
                    options: dict[str, Any] | None = None) -> ResetResult:
        """Start an episode on the least loaded server that takes it."""
        call = _core.reset_call(env_id, task_id, seed, options)
        plan = ResetPlan(self._routing, self._retry)
        while True:
            index = plan.next()
            if isinstance(index, _core.Retry):
                await asyncio.sleep(index.delay_s)
                continue
            try:
                result = await self.clients[index]._json(call, retry=NO_RETRY)
            except ToolGymError as exc:
                plan.failed(index, exc)
                continue
            return plan.done(index, result)

    async def step(self, episode_id: str, action: Any, *, expected_turn: int | None = None,
                   idempotency_key: str | None = None, mean_logprob: float | None = None,
                   token_ids: Sequence[int] | None = None, logprobs: Sequence[float] | None = None) -> StepResult:
        """One action, on the episode's own server."""
        result = await self._on(episode_id, lambda c: c.step(
            episode_id, action, expected_turn=expected_turn, idempotency_key=idempotency_key,
            mean_logprob=mean_logprob, token_ids=token_ids, logprobs=logprobs))
        return self._routing.stepped(episode_id, result)

    async def episode(self, episode_id: str) -> dict[str, Any]:
        """The episode's state, from its own server."""
        return await self._on(episode_id, lambda c: c.episode(episode_id))

    async def trajectory(self, episode_id: str) -> list[dict[str, Any]]:
        """The episode's trajectory records, from its own server."""
        return await self._on(episode_id, lambda c: c.trajectory(episode_id))

    async def fork(self, episode_id: str, turn: int | None = None) -> ResetResult:
        """A new episode at ``turn`` of this one; it lives on the same server."""
        index = self._routing.owner(episode_id)
        result = await self._on(episode_id, lambda c: c.fork(episode_id, turn))
        self._routing.opened(index, result.episode_id)
        return result

    async def close(self, episode_id: str) -> None:
        """End the episode on its own server (a no-op for an episode lost with its server)."""
        try:
            await self._on(episode_id, lambda c: c.close(episode_id))
        except EpisodeLost:
            pass
        self._routing.ended(episode_id)
