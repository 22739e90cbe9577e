"""``EnvClient``: the blocking client (httpx, pooled connections, typed results)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from toolgym.client import _core
from toolgym.client._core import Call, ResetResult, RetryPolicy, StepResult
from toolgym.errors import ToolGymError, Unavailable

__all__ = ["EnvClient"]


class EnvClient:
    """A ToolGym server, from a trainer's side.

    ``reset`` starts an episode in its own sandbox; ``step`` sends one action and returns the
    observation and the verifiable reward; ``close`` ends the episode. Errors are the classes
    of ``toolgym.errors`` (``EpisodeNotFound``, ``EpisodeFinished``, ...); 503s are retried
    with backoff, and steps carry an ``Idempotency-Key`` so a retried step never acts twice.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 256,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout_s, transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._retry = retry or RetryPolicy()

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_client()

    def close_client(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
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
            time.sleep(self._retry.delay(attempt, getattr(error, "retry_after_s", None)))
            attempt += 1

    def _json(self, call: Call) -> Any:
        return self._send(call).json()

    # --- envs and tasks -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json(Call("GET", "/healthz", safe_to_repeat=True))  # type: ignore[no-any-return]

    def version(self) -> dict[str, Any]:
        return self._json(Call("GET", "/v1/version", safe_to_repeat=True))  # type: ignore[no-any-return]

    def envs(self) -> list[dict[str, Any]]:
        return self._json(Call("GET", "/v1/envs", safe_to_repeat=True))["envs"]  # type: ignore[no-any-return]

    def tasks(self, env_id: str, split: str | None = None, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if split:
            params["split"] = split
        return self._json(Call("GET", f"/v1/envs/{env_id}/tasks", params=params, safe_to_repeat=True))  # type: ignore[no-any-return]

    def register_tasks(self, env_id: str, records: list[dict[str, Any]]) -> list[str]:
        """Register task records (the env's format); returns their ids."""
        body = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode("utf-8")
        call = Call("POST", f"/v1/envs/{env_id}/tasks", content=body,
                    headers={"Content-Type": "application/x-ndjson"})
        return self._json(call)["ids"]  # type: ignore[no-any-return]

    def task_stats(self, env_id: str) -> list[dict[str, Any]]:
        return self._json(Call("GET", f"/v1/envs/{env_id}/tasks/stats", safe_to_repeat=True))["tasks"]  # type: ignore[no-any-return]

    # --- episodes -------------------------------------------------------------------------------
    def reset(self, env_id: str, task_id: str | None = None, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> ResetResult:
        return _core.reset_result(self._json(_core.reset_call(env_id, task_id, seed, options)))

    def step(self, episode_id: str, action: Any, *, expected_turn: int | None = None,
             idempotency_key: str | None = None, mean_logprob: float | None = None) -> StepResult:
        call = _core.step_call(episode_id, action, expected_turn, idempotency_key, mean_logprob)
        return _core.step_result(self._json(call))

    def episode(self, episode_id: str) -> dict[str, Any]:
        return self._json(Call("GET", f"/v1/episodes/{episode_id}", safe_to_repeat=True))  # type: ignore[no-any-return]

    def trajectory(self, episode_id: str) -> list[dict[str, Any]]:
        text = self._send(Call("GET", f"/v1/episodes/{episode_id}/trajectory", safe_to_repeat=True)).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def fork(self, episode_id: str, turn: int | None = None) -> ResetResult:
        body = {} if turn is None else {"turn": turn}
        return _core.reset_result(self._json(Call("POST", f"/v1/episodes/{episode_id}/fork", json=body)))

    def close(self, episode_id: str) -> None:
        self._send(Call("DELETE", f"/v1/episodes/{episode_id}", safe_to_repeat=True))
