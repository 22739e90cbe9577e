"""The client's I/O-free half, shared by ``EnvClient`` and ``AsyncEnvClient``.

It holds what each method sends (a ``Call``), how its answer is read, and the retry loop
(``Exchange``). Neither client duplicates any of it; each only moves bytes and sleeps. The
WebSocket transport reuses it too: ``ws_frame`` frames a ``Call`` and ``ws_response`` reads
the answer as the HTTP response.

Size: a little over 400 lines: one ``Call`` builder and one reader per API method, kept
together so both clients stay thin.
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx

from toolgym.actions import action_from_wire, action_to_wire
from toolgym.errors import RateLimited, ToolGymError, Unavailable, error_from_wire

__all__ = [
    "Call",
    "Exchange",
    "ResetResult",
    "Retry",
    "RetryPolicy",
    "StepResult",
    "DEFAULT_BASE_URL",
    "action_to_json",
    "parse_error",
    "resolve_api_key",
    "resolve_base_url",
    "ws_frame",
    "ws_response",
    "ws_url",
]


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
    """How a client retries: 503s, 429 ``rate_limited``, and transport errors of safe requests.

    Each with exponential backoff and jitter (the server did nothing, so sending again is
    safe). A 503's or 429's ``Retry-After`` is a floor on the wait (capped at ``max_backoff_s``);
    ``max_retries`` counts the attempts after the first.
    """

    max_retries: int = 5
    backoff_s: float = 0.25
    max_backoff_s: float = 10.0

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        base = min(self.max_backoff_s, self.backoff_s * (2.0**attempt))
        if retry_after_s is not None:
            base = max(base, min(retry_after_s, self.max_backoff_s))
        # Jitter upwards only, so a server's Retry-After is honoured and many clients spread out.
        return min(self.max_backoff_s, base * (1.0 + random.random() / 2))


@dataclass(frozen=True)
class Call:
    """One HTTP request, described without sending it, and how to read its answer."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    safe_to_repeat: bool = False
    """Whether a transport error may be retried (the request is idempotent)."""
    read: Callable[[httpx.Response], Any] = field(default=lambda response: response.json(), repr=False)
    """The result of a successful answer."""

    def request_kwargs(self) -> dict[str, Any]:
        return {"json": self.json, "params": self.params, "headers": self.headers, "content": self.content}


class Retry(NamedTuple):
    """``Exchange.settle``'s answer when the call should be sent again after ``delay_s``."""

    delay_s: float


class Exchange:
    """The retry loop of one call, without I/O.

    A client sends ``call``, hands each attempt's outcome (a response, or the transport error)
    to ``settle``, and either gets the result, gets a ``Retry`` to sleep on, or sees the typed
    error raised.
    """

    def __init__(self, call: Call, policy: RetryPolicy) -> None:
        self.call = call
        self.policy = policy
        self.attempt = 0

    def settle(self, outcome: httpx.Response | httpx.TransportError) -> Any:
        cause: BaseException | None = None
        retry_after: float | None = None
        if isinstance(outcome, httpx.Response):
            if outcome.is_success:
                return self.call.read(outcome)
            error = response_error(outcome)
            # The server did nothing, so the call may be sent again; unless the episode is gone
            # (a fleet entry point's lost replica): still retryable for a trainer, which masks
            # the rollout, but sending the same call again cannot bring the episode back.
            may_retry = isinstance(error, Unavailable | RateLimited) and not error.details.get("episode_lost")
            retry_after = getattr(error, "retry_after_s", None)
        else:
            error, may_retry = transport_error(self.call, outcome)
            cause = outcome
        if not may_retry or self.attempt >= self.policy.max_retries:
            raise error from cause
        delay = self.policy.delay(self.attempt, retry_after)
        self.attempt += 1
        return Retry(delay)


DEFAULT_BASE_URL = "http://127.0.0.1:8000"
"""Where ``toolgym serve`` listens by default, and so where a client looks when told nothing."""


def resolve_base_url(base_url: str | None) -> str:
    """The server a client talks to: ``base_url``, else ``$TOOLGYM_BASE_URL``, else the default.

    One rule for the clients and every ``toolgym`` command, so a trainer and the CLI pointed
    at a remote server by the same variable reach the same one.
    """
    if base_url:
        return base_url
    return os.environ.get("TOOLGYM_BASE_URL") or DEFAULT_BASE_URL


def resolve_api_key(api_key: str | None) -> str | None:
    """The key a client sends: ``api_key`` (``""`` means none), else ``$TOOLGYM_API_KEY``.

    Read at construction, so the key need not appear in code or on a command line.
    """
    if api_key is not None:
        return api_key or None
    return os.environ.get("TOOLGYM_API_KEY") or None


def http_client_options(base_url: str | None, api_key: str | None, timeout_s: float,
                        max_connections: int) -> dict[str, Any]:
    """What both clients give their httpx client: base URL, bearer key, timeout, pool size.

    ``base_url`` and ``api_key`` fall back on ``TOOLGYM_BASE_URL`` and ``TOOLGYM_API_KEY``.
    """
    base_url = resolve_base_url(base_url)
    api_key = resolve_api_key(api_key)
    return {
        "base_url": base_url,
        "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
        "timeout": timeout_s,
        "limits": httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    }


def transport_error(call: Call, exc: httpx.TransportError) -> tuple[ToolGymError, bool]:
    """The error for a request that got no answer, and whether it may be sent again.

    It may always be sent again when the connection was never made, else only when the call is
    safe to repeat.
    """
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Unavailable(f"cannot connect to the ToolGym server: {exc}"), True
    return Unavailable(f"the request to the ToolGym server failed: {exc!r}"), call.safe_to_repeat


def response_error(response: httpx.Response) -> ToolGymError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return parse_error(response.status_code, body, response.headers.get("Retry-After"))


def parse_error(status: int, body: Any, retry_after: str | None) -> ToolGymError:
    """The typed error of an error answer.

    A 503 is ``Unavailable`` (retried) even when it does not come from ToolGym (a proxy's HTML page).
    """
    exc = error_from_wire(status, body)
    if status == 503 and not isinstance(exc, Unavailable):
        exc = Unavailable(exc.message, status=status)
    if isinstance(exc, Unavailable) and retry_after:
        try:
            exc.retry_after_s = float(retry_after)
        except ValueError:
            pass
    return exc


def action_to_json(action: Any) -> Any:
    """The JSON a step sends for ``action``, checked before anything is sent.

    ``action`` is a string, an assistant message dict (``content``/``tool_calls``; ``role``,
    ``reasoning_content`` and ``refusal`` are dropped) or an ``AssistantMessage``. Any other
    shape raises ``ValidationFailed`` here, as the server's 422 would: the one converter is
    ``toolgym.actions``.
    """
    return action_to_wire(action_from_wire(action))


# --- readers ----------------------------------------------------------------------------------
def _key(name: str) -> Callable[[httpx.Response], Any]:
    return lambda response: response.json()[name]


def _nothing(response: httpx.Response) -> None:
    return None


def _jsonl(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def reset_result(body: dict[str, Any]) -> ResetResult:
    return ResetResult(episode_id=body["episode_id"], observation=body["observation"], info=body["info"])


def step_result(body: dict[str, Any]) -> StepResult:
    return StepResult(observation=body["observation"], reward=float(body["reward"]),
                      terminated=bool(body["terminated"]), truncated=bool(body["truncated"]), info=body["info"])


def _read_reset(response: httpx.Response) -> ResetResult:
    return reset_result(response.json())


def _read_step(response: httpx.Response) -> StepResult:
    return step_result(response.json())


# --- the calls, one per client method ---------------------------------------------------------
def health_call() -> Call:
    return Call("GET", "/healthz", safe_to_repeat=True)


def version_call() -> Call:
    return Call("GET", "/v1/version", safe_to_repeat=True)


def envs_call() -> Call:
    return Call("GET", "/v1/envs", safe_to_repeat=True, read=_key("envs"))


def tasks_call(env_id: str, split: str | None, offset: int, limit: int) -> Call:
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    if split:
        params["split"] = split
    return Call("GET", f"/v1/envs/{env_id}/tasks", params=params, safe_to_repeat=True)


def register_tasks_call(env_id: str, records: list[dict[str, Any]]) -> Call:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    return Call("POST", f"/v1/envs/{env_id}/tasks", content=body, headers={"Content-Type": "application/x-ndjson"},
                read=_key("ids"))


def task_stats_call(env_id: str) -> Call:
    return Call("GET", f"/v1/envs/{env_id}/tasks/stats", safe_to_repeat=True, read=_key("tasks"))


def reset_call(env_id: str, task_id: str | None, seed: int | None, options: dict[str, Any] | None) -> Call:
    # Like steps, every reset carries a key: a retry after a lost answer gets the same episode.
    return Call("POST", "/v1/episodes", json=_reset_body(env_id, task_id, seed, options),
                headers={"Idempotency-Key": uuid.uuid4().hex}, safe_to_repeat=True, read=_read_reset)


def sample_body(token_ids: Sequence[int] | None, logprobs: Sequence[float] | None) -> dict[str, Any] | None:
    """The step body's ``sample`` (the policy's token ids and their log-probabilities), or None.

    Log-probabilities without token ids are refused here: the server stores tokens, and a lone list
    of numbers could not be trained on.
    """
    if token_ids is None:
        if logprobs is not None:
            raise ValueError("logprobs need the token_ids they belong to")
        return None
    sample: dict[str, Any] = {"token_ids": [int(t) for t in token_ids]}
    if logprobs is not None:
        sample["logprobs"] = [float(x) for x in logprobs]
    return sample


def step_call(episode_id: str, action: Any, expected_turn: int | None, idempotency_key: str | None,
              mean_logprob: float | None, sample: dict[str, Any] | None = None) -> Call:
    body: dict[str, Any] = {"action": action_to_json(action)}
    if expected_turn is not None:
        body["expected_turn"] = expected_turn
    if mean_logprob is not None:
        body["mean_logprob"] = mean_logprob
    if sample is not None:
        body["sample"] = sample
    # Every step carries a key, so a retry after a lost answer never acts twice.
    key = idempotency_key or uuid.uuid4().hex
    return Call("POST", f"/v1/episodes/{episode_id}/step", json=body, headers={"Idempotency-Key": key},
                safe_to_repeat=True, read=_read_step)


def _reset_body(env_id: str, task_id: str | None = None, seed: int | None = None,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"env_id": env_id}
    if task_id is not None:
        body["task_id"] = task_id
    if seed is not None:
        body["seed"] = seed
    if options:
        body["options"] = options
    return body


def _read_batch(item: Callable[[dict[str, Any]], Any]) -> Callable[[httpx.Response], list[Any]]:
    def read(response: httpx.Response) -> list[Any]:
        out: list[Any] = []
        for entry in response.json()["results"]:
            if entry["ok"]:
                out.append(item(entry["result"]))
            else:
                out.append(parse_error(entry["status"], {"error": entry["error"]}, None))
        return out

    return read


def batch_reset_call(resets: list[dict[str, Any]]) -> Call:
    """Each item: ``{"env_id", "task_id"?, "seed"?, "options"?}``."""
    return Call("POST", "/v1/batch/reset", json={"resets": [_reset_body(**r) for r in resets]},
                read=_read_batch(reset_result))


def batch_step_call(steps: list[dict[str, Any]]) -> Call:
    """Each item: ``{"episode_id", "action", "expected_turn"?, "mean_logprob"?, "sample"?, "idempotency_key"?}``.

    ``sample`` is the step body's: ``{"token_ids": [...], "logprobs"?: [...]}``.

    Every item gets an idempotency key, so the whole batch is safe to send again.
    """
    items = []
    for step in steps:
        item = {k: v for k, v in step.items() if v is not None}
        item["action"] = action_to_json(step["action"])
        item.setdefault("idempotency_key", uuid.uuid4().hex)
        items.append(item)
    return Call("POST", "/v1/batch/step", json={"steps": items}, safe_to_repeat=True, read=_read_batch(step_result))


def episode_call(episode_id: str) -> Call:
    return Call("GET", f"/v1/episodes/{episode_id}", safe_to_repeat=True)


def episodes_call(status: str | None, offset: int, limit: int) -> Call:
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    if status:
        params["status"] = status
    return Call("GET", "/v1/episodes", params=params, safe_to_repeat=True)


def trajectory_call(episode_id: str) -> Call:
    return Call("GET", f"/v1/episodes/{episode_id}/trajectory", safe_to_repeat=True, read=_jsonl)


def fork_call(episode_id: str, turn: int | None) -> Call:
    body = {} if turn is None else {"turn": turn}
    return Call("POST", f"/v1/episodes/{episode_id}/fork", json=body, read=_read_reset)


def close_call(episode_id: str) -> Call:
    return Call("DELETE", f"/v1/episodes/{episode_id}", safe_to_repeat=True, read=_nothing)


# --- the WebSocket session (/v1/ws): the same calls, framed --------------------------------------
_WS_OPS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/v1/episodes"), "reset"),
    ("POST", re.compile(r"/v1/episodes/([^/]+)/step"), "step"),
    ("DELETE", re.compile(r"/v1/episodes/([^/]+)"), "close"),
    ("GET", re.compile(r"/v1/episodes/([^/]+)"), "get"),
)


def ws_url(base_url: str) -> str:
    """The session's address on the server at ``base_url`` (``http`` -> ``ws``, ``https`` -> ``wss``)."""
    url = httpx.URL(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(url.scheme, url.scheme)
    return str(url.copy_with(scheme=scheme, path=url.path.rstrip("/") + "/v1/ws"))


def ws_frame(call: Call) -> dict[str, Any] | None:
    """``call`` as a request frame of the WebSocket session (without its ``id``), or None for HTTP.

    None when the session has no such op (listing, tasks, batches, fork ...: those stay on
    HTTP). The frame carries the call's body and its ``Idempotency-Key``, so a frame sent again
    after a dropped socket is the same request.
    """
    for method, pattern, op in _WS_OPS:
        if call.method != method:
            continue
        match = pattern.fullmatch(call.path)
        if match is None:
            continue
        frame: dict[str, Any] = {"op": op}
        if match.groups():
            frame["episode_id"] = match.group(1)
        if call.json is not None:
            frame["body"] = call.json
        key = call.headers.get("Idempotency-Key")
        if key is not None:
            frame["idempotency_key"] = key
        return frame
    return None


def ws_response(status: int, body: Any) -> httpx.Response:
    """An answer frame as the response the HTTP route would have given.

    So ``Exchange`` and the readers handle both transports alike (an ``Unavailable`` body
    carries its ``retry_after_s``, as the header would).
    """
    if body is None:
        return httpx.Response(status)
    return httpx.Response(status, json=body)
