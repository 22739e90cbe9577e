"""``EnvClient``: the blocking client (httpx, pooled connections, typed results)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from toolgym.client import _core
from toolgym.client._core import Call, ResetResult, RetryPolicy, StepResult
from toolgym.errors import ToolGymError

__all__ = ["EnvClient"]


class EnvClient:
    """A ToolGym server, from a trainer's side.

    ``reset`` starts an episode in its own sandbox; ``step`` sends one action and returns the
    observation and the verifiable reward; ``close`` ends the episode. Errors are the classes
    of ``toolgym.errors`` (``EpisodeNotFound``, ``EpisodeFinished``, ...); 503s are retried
    with backoff (``retry``), and steps carry an ``Idempotency-Key`` so a retried step never
    acts twice. Safe to share between threads; ``close_client`` (or ``with``) releases the
    connection pool.

    Without ``base_url`` or ``api_key``, ``TOOLGYM_BASE_URL`` and ``TOOLGYM_API_KEY`` are read
    (then ``http://127.0.0.1:8000`` and no key), as by every ``toolgym`` command.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 256,
    ) -> None:
        options = _core.http_client_options(base_url, api_key, timeout_s, max_connections)
        self._http = httpx.Client(transport=transport, **options)
        self._retry = retry or RetryPolicy()

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_client()

    def close_client(self) -> None:
        """Close the connection pool (idempotent). Open episodes stay open on the server."""
        self._http.close()

    def _json(self, call: Call, retry: RetryPolicy | None = None) -> Any:
        """Send ``call`` (retrying as the policy says, ``retry`` or the client's) and return its result."""
        exchange = _core.Exchange(call, retry or self._retry)
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as exc:
                outcome = exc
            result = exchange.settle(outcome)
            if not isinstance(result, _core.Retry):
                return result
            time.sleep(result.delay_s)

    # --- server and envs ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness: ``{"status": "ok"}``."""
        return self._json(_core.health_call())  # type: ignore[no-any-return]

    def version(self) -> dict[str, Any]:
        """``{"version", "api_version", "envs", "replica"}``, for compatibility checks."""
        return self._json(_core.version_call())  # type: ignore[no-any-return]

    def envs(self) -> list[dict[str, Any]]:
        """The env families: id, formats, reward spec, reset options, task counts per split."""
        return self._json(_core.envs_call())  # type: ignore[no-any-return]

    def tasks(self, env_id: str, split: str | None = None, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of task ids and public metadata: ``{"tasks", "total", "offset", "limit"}``."""
        return self._json(_core.tasks_call(env_id, split, offset, limit))  # type: ignore[no-any-return]

    def register_tasks(self, env_id: str, records: list[dict[str, Any]]) -> list[str]:
        """Register task records (the env's format, sent as JSONL); returns their ids.

        All or none: ``DuplicateTask`` (409) or ``ValidationFailed`` (422) name the first bad record.
        """
        return self._json(_core.register_tasks_call(env_id, records))  # type: ignore[no-any-return]

    def task_stats(self, env_id: str) -> list[dict[str, Any]]:
        """Per-task reward statistics from the episodes served."""
        return self._json(_core.task_stats_call(env_id))  # type: ignore[no-any-return]

    # --- episodes -------------------------------------------------------------------------------
    def reset(self, env_id: str, task_id: str | None = None, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> ResetResult:
        """Start an episode (a task drawn from ``options["split"]`` unless ``task_id`` is given)."""
        return self._json(_core.reset_call(env_id, task_id, seed, options))  # type: ignore[no-any-return]

    def step(self, episode_id: str, action: Any, *, expected_turn: int | None = None,
             idempotency_key: str | None = None, mean_logprob: float | None = None,
             token_ids: Sequence[int] | None = None, logprobs: Sequence[float] | None = None) -> StepResult:
        """Send one action: a string, or an assistant message dict (``content``, ``tool_calls``).

        ``token_ids`` (and ``logprobs``, one per token) are the tokens the policy sampled for this
        turn: the server stores them with the step and returns them in the trajectory and in
        ``toolgym export``, so training uses exactly what was sampled. Without ``mean_logprob``,
        the server takes the mean of ``logprobs`` for the task statistics.
        """
        call = _core.step_call(episode_id, action, expected_turn, idempotency_key, mean_logprob,
                               _core.sample_body(token_ids, logprobs))
        return self._json(call)  # type: ignore[no-any-return]

    def batch_reset(self, resets: list[dict[str, Any]]) -> list[ResetResult | ToolGymError]:
        """Many resets in one request; one result per item, in order.

        Items: ``env_id``, ``task_id``?, ``seed``?, ``options``?. Each result is a
        ``ResetResult``, or the item's typed error.
        """
        return self._json(_core.batch_reset_call(resets))  # type: ignore[no-any-return]

    def batch_step(self, steps: list[dict[str, Any]]) -> list[StepResult | ToolGymError]:
        """Steps on different episodes in one request; one result per item, in order.

        Items: ``episode_id``, ``action``, ``expected_turn``?, ``mean_logprob``?,
        ``sample``? (``{"token_ids", "logprobs"?}``, as ``step`` sends it), ``idempotency_key``?.
        Each result is a ``StepResult``, or the item's typed error.
        """
        return self._json(_core.batch_step_call(steps))  # type: ignore[no-any-return]

    def episode(self, episode_id: str) -> dict[str, Any]:
        """The episode's state: turn, status, reason, total reward, the trajectory so far."""
        return self._json(_core.episode_call(episode_id))  # type: ignore[no-any-return]

    def episodes(self, status: str | None = None, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """This key's episodes (``status``: live, finished or interrupted), one page."""
        return self._json(_core.episodes_call(status, offset, limit))  # type: ignore[no-any-return]

    def trajectory(self, episode_id: str) -> list[dict[str, Any]]:
        """The trajectory as records: the reset (``turn`` None), then one per step."""
        return self._json(_core.trajectory_call(episode_id))  # type: ignore[no-any-return]

    def fork(self, episode_id: str, turn: int | None = None) -> ResetResult:
        """A new episode at ``turn`` of this one (default: its current turn), by replay."""
        return self._json(_core.fork_call(episode_id, turn))  # type: ignore[no-any-return]

    def close(self, episode_id: str) -> None:
        """End the episode and destroy its sandbox (closing an ended episode is a no-op)."""
        self._json(_core.close_call(episode_id))
