"""The client's I/O-free half, shared by ``EnvClient`` and ``AsyncEnvClient``: what to send,
how to read the answer, and when to retry. Neither client duplicates any of it."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from toolgym.errors import ToolGymError, Unavailable, error_from_wire

__all__ = ["Call", "ResetResult", "RetryPolicy", "StepResult", "action_to_json", "parse_error"]


@dataclass(frozen=True)
class ResetResult:
    """What a reset returns: the new episode's id, its first observation, and ``info``."""

    episode_id: str
    observation: dict[str, Any]
    info: dict[str, Any]


@dataclass(frozen=True)
class StepResult:
    """What a step returns, as in ``gymnasium.Env.step``.

    ``terminated``: the episode reached a terminal state (e.g. the policy gave its final
    answer); ``truncated``: it was cut off (e.g. the turn limit). ``info["status"]`` tells an
    ``invalid_action`` or a tool ``timeout`` apart from ``ok``; ``info["reason"]`` why it stopped.
    """

    observation: dict[str, Any]
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    def as_tuple(self) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        return self.observation, self.reward, self.terminated, self.truncated, self.info


@dataclass(frozen=True)
class RetryPolicy:
    """Retries 503s (honouring ``Retry-After``) and, for requests that are safe to repeat,
    transport errors, with exponential backoff and jitter."""

    max_retries: int = 5
    backoff_s: float = 0.25
    max_backoff_s: float = 10.0

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        base = min(self.max_backoff_s, self.backoff_s * (2.0**attempt))
        if retry_after_s is not None:
            base = max(base, min(retry_after_s, self.max_backoff_s))
        return base * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class Call:
    """One HTTP request, described without sending it."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    safe_to_repeat: bool = False
    """Whether a transport error may be retried (the request is idempotent)."""


def action_to_json(action: Any) -> Any:
    """A string, or an assistant message given as a dict (``role``/``content``/``tool_calls``)."""
    if isinstance(action, str):
        return action
    if isinstance(action, dict):
        return {k: v for k, v in action.items() if k in ("role", "content", "tool_calls", "reasoning_content")}
    raise TypeError(f"an action is a string or an assistant message dict, not {type(action).__name__}")


def parse_error(status: int, body: Any, retry_after: str | None) -> ToolGymError:
    exc = error_from_wire(status, body)
    if isinstance(exc, Unavailable) and retry_after:
        try:
            exc.retry_after_s = float(retry_after)
        except ValueError:
            pass
    return exc


def reset_call(env_id: str, task_id: str | None, seed: int | None, options: dict[str, Any] | None) -> Call:
    body: dict[str, Any] = {"env_id": env_id}
    if task_id is not None:
        body["task_id"] = task_id
    if seed is not None:
        body["seed"] = seed
    if options:
        body["options"] = options
    return Call("POST", "/v1/episodes", json=body)


def step_call(episode_id: str, action: Any, expected_turn: int | None, idempotency_key: str | None,
              mean_logprob: float | None) -> Call:
    body: dict[str, Any] = {"action": action_to_json(action)}
    if expected_turn is not None:
        body["expected_turn"] = expected_turn
    if mean_logprob is not None:
        body["mean_logprob"] = mean_logprob
    # Every step carries a key, so a retry after a lost answer never acts twice.
    key = idempotency_key or uuid.uuid4().hex
    return Call("POST", f"/v1/episodes/{episode_id}/step", json=body, headers={"Idempotency-Key": key},
                safe_to_repeat=True)


def reset_result(body: dict[str, Any]) -> ResetResult:
    return ResetResult(episode_id=body["episode_id"], observation=body["observation"], info=body["info"])


def step_result(body: dict[str, Any]) -> StepResult:
    return StepResult(observation=body["observation"], reward=float(body["reward"]),
                      terminated=bool(body["terminated"]), truncated=bool(body["truncated"]), info=body["info"])
