"""``AsyncEnvClient``: the asyncio client, for trainers that run many rollouts at once.

It shares every request and response rule with ``EnvClient`` (``_core``); only the
sending loop is its own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from toolgym.client import _core
from toolgym.client._core import Call, ResetResult, RetryPolicy, StepResult
from toolgym.errors import ToolGymError, Unavailable

__all__ = ["AsyncEnvClient"]


class AsyncEnvClient:
    """The async twin of ``EnvClient``: same methods, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1024,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout_s, transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._retry = retry or RetryPolicy()

    async def __aenter__(self) -> AsyncEnvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers,
                    content=call.content,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error: ToolGymError = Unavailable(f"cannot connect to the ToolGym server: {exc}")
                cause: Exception = exc
            except httpx.TransportError as exc:
                if not call.safe_to_repeat:
                    raise Unavailable(f"the request to the ToolGym server failed: {exc}") from exc
                error, cause = Unavailable(f"the request to the ToolGym server failed: {exc}"), exc
            else:
                if response.is_success:
                    return response
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                error = _core.parse_error(response.status_code, body, response.headers.get("Retry-After"))
                if not isinstance(error, Unavailable):
                    raise error
                cause = error
            if attempt >= self._retry.max_retries:
                raise error from (cause if cause is not error else None)
            await asyncio.sleep(self._retry.delay(attempt, getattr(error, "retry_after_s", None)))
            attempt += 1

    async def _json(self, call: Call) -> Any:
        return (await self._send(call)).json()

    async def envs(self) -> list[dict[str, Any]]:
        return (await self._json(Call("GET", "/v1/envs", safe_to_repeat=True)))["envs"]  # type: ignore[no-any-return]

    async def register_tasks(self, env_id: str, records: list[dict[str, Any]]) -> list[str]:
        body = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode("utf-8")
        call = Call("POST", f"/v1/envs/{env_id}/tasks", content=body,
                    headers={"Content-Type": "application/x-ndjson"})
        return (await self._json(call))["ids"]  # type: ignore[no-any-return]

    async def task_stats(self, env_id: str) -> list[dict[str, Any]]:
        return (await self._json(Call("GET", f"/v1/envs/{env_id}/tasks/stats", safe_to_repeat=True)))["tasks"]  # type: ignore[no-any-return]

    async def reset(self, env_id: str, task_id: str | None = None, *, seed: int | None = None,
                    options: dict[str, Any] | None = None) -> ResetResult:
        return _core.reset_result(await self._json(_core.reset_call(env_id, task_id, seed, options)))

    async def step(self, episode_id: str, action: Any, *, expected_turn: int | None = None,
                   idempotency_key: str | None = None, mean_logprob: float | None = None) -> StepResult:
        call = _core.step_call(episode_id, action, expected_turn, idempotency_key, mean_logprob)
        return _core.step_result(await self._json(call))

    async def episode(self, episode_id: str) -> dict[str, Any]:
        return await self._json(Call("GET", f"/v1/episodes/{episode_id}", safe_to_repeat=True))  # type: ignore[no-any-return]

    async def fork(self, episode_id: str, turn: int | None = None) -> ResetResult:
        body = {} if turn is None else {"turn": turn}
        return _core.reset_result(await self._json(Call("POST", f"/v1/episodes/{episode_id}/fork", json=body)))

    async def close(self, episode_id: str) -> None:
        await self._send(Call("DELETE", f"/v1/episodes/{episode_id}", safe_to_repeat=True))
