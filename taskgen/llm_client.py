"""JSON replies from any OpenAI-compatible chat endpoint, for the LLM-driven generator stages.

One method matters: ``ChatClient.complete_json(stage, system, payload, validate, seed)``
sends a system prompt and a JSON input, demands a JSON object back, and returns what
``validate`` makes of it. The requests themselves go through ToolGym's one chat client
(``toolgym.chat.SyncChat``: URL, key, total deadline, size cap, typed errors); what the
generator does about each failure is decided here, in one place:

- **transport**: a connection error, a request that outlives ``request_timeout_s`` (a total
  deadline per request, not httpx's per-read one), HTTP 429 or 5xx: retried with exponential
  backoff (``Retry-After`` honoured up to ``max_backoff_s``), and so is a success that is no
  chat completion (a proxy's error page);
- **reply**: not a JSON object (strictly parsed: duplicate keys, ``NaN`` and trailing text
  are errors; one surrounding code fence is tolerated), cut off at the length limit, or
  rejected by ``validate``: retried with the model's reply and the exact problem appended
  ("repair" turn), so the model can correct itself;
- **configuration**: HTTP 400 (after one retry without ``response_format`` and ``seed``,
  which some servers refuse), 401, 403, 404: not retried — asking again changes nothing.

At most ``max_attempts`` requests per call. The errors::

    LLMError                  a stage could not get a usable reply
    ├── LLMUnavailable        the last attempt failed in transport (timeout, 5xx, 429, refused)
    ├── LLMReplyInvalid       the last attempt's reply was malformed or failed validation
    └── LLMConfigError        the endpoint refused the request itself (400/401/403/404)

An optional reply cache (``cache_path``, JSONL) keyed by the request (model, messages,
seed, temperature) makes a run replayable byte for byte: only replies that passed
validation are stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from toolgym.chat import ChatCompletion, ChatEndpoint, ChatError, ChatHTTPError, SyncChat

__all__ = [
    "API_KEY_ENV",
    "ChatClient",
    "LLMConfig",
    "LLMConfigError",
    "LLMError",
    "LLMReplyInvalid",
    "LLMUnavailable",
    "ReplyError",
    "parse_json_reply",
]

API_KEY_ENV = "TOOLGYM_LLM_API_KEY"
"""The environment variable the endpoint's API key is read from (never a command-line flag)."""

T = TypeVar("T")


class LLMError(Exception):
    """A stage could not get a usable reply from the model.

    ``stage``, ``attempts`` and ``failures`` (one line per failed request) say what happened.
    """

    code = "llm_error"

    def __init__(self, message: str, *, stage: str, attempts: int = 0, failures: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.stage = stage
        self.attempts = attempts
        self.failures = failures


class LLMUnavailable(LLMError):
    """The endpoint did not answer usefully (timeouts, connection errors, 429/5xx)."""

    code = "llm_unavailable"


class LLMReplyInvalid(LLMError):
    """The model's replies were not the JSON asked for, even after repair turns."""

    code = "llm_invalid_reply"


class LLMConfigError(LLMError):
    """The endpoint refused the request (bad URL, model name or key): fix the settings."""

    code = "llm_config_error"


class ReplyError(ValueError):
    """One reply is unusable; the message is shown to the model in the repair turn."""


@dataclass(frozen=True)
class LLMConfig:
    """Where the generator's model is and how to ask it.

    ``endpoint`` is the chat client's view of the same settings.
    """

    base_url: str
    """The OpenAI-style base URL, e.g. ``http://127.0.0.1:8001/v1``; requests go to
    ``{base_url}/chat/completions``."""
    model: str
    api_key: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer``; ``from_env`` reads it from ``TOOLGYM_LLM_API_KEY``.
    Never shown in a repr."""
    request_timeout_s: float = 120.0
    """Total time one HTTP request may take, reply included."""
    max_attempts: int = 3
    """Requests per stage call, counting transport failures and invalid replies alike."""
    backoff_s: float = 1.0
    """First wait after a transport failure; doubles per failure."""
    max_backoff_s: float = 30.0
    temperature: float = 0.0
    max_tokens: int | None = 4096
    json_mode: bool = True
    """Ask for ``response_format: {"type": "json_object"}`` (dropped, with ``seed``, after an
    HTTP 400)."""
    max_reply_bytes: int = 1 << 20
    cache_path: str | None = None
    """A JSONL file of validated replies: a rerun with the same inputs replays them."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"the LLM base URL must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("an LLM model name is required")
        if self.max_attempts < 1 or self.request_timeout_s <= 0:
            raise ValueError("max_attempts must be >= 1 and request_timeout_s positive")

    @classmethod
    def from_env(cls, base_url: str, model: str, **overrides: Any) -> LLMConfig:
        """A config whose key comes from ``TOOLGYM_LLM_API_KEY`` (never a command-line flag)."""
        key = ChatEndpoint.from_env(base_url, API_KEY_ENV).api_key
        return cls(base_url=base_url, model=model, api_key=key, **overrides)

    @property
    def endpoint(self) -> ChatEndpoint:
        """The chat client's settings: retries are ``complete_json``'s, so none there."""
        return ChatEndpoint(self.base_url, api_key=self.api_key, request_timeout_s=self.request_timeout_s,
                            timeout_knob="request_timeout_s, or --llm-timeout-s",
                            max_reply_bytes=self.max_reply_bytes, backoff_s=self.backoff_s,
                            max_backoff_s=self.max_backoff_s)

    @property
    def url(self) -> str:
        """The URL requests are posted to."""
        return self.endpoint.url


_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*)\n[ \t]*```", re.DOTALL)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ReplyError(f"duplicate key {key!r} in the JSON object")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ReplyError(f"{name} is not valid JSON")


def parse_json_reply(content: str) -> dict[str, Any]:
    """The JSON object in a model's reply, strictly.

    The whole reply (or the whole inside of one code fence) must be one JSON object; duplicate
    keys, ``NaN`` and ``Infinity`` are errors. Raises ``ReplyError`` saying what is wrong.
    """
    text = content.strip()
    if text.startswith("```"):
        match = _FENCE.fullmatch(text)
        if match is None:
            raise ReplyError("the reply opens a code fence but is not exactly one fenced JSON object")
        text = match.group(1).strip()
    if not text.startswith("{"):
        raise ReplyError("the reply must be a single JSON object and nothing else")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ReplyError(f"the reply is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ReplyError("the reply must be a JSON object")
    return value


class _Cache:
    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        if self._path.exists():
            for line in self._path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry["content"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from an interrupted run

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, content: str) -> None:
        with self._lock:
            if self._entries.get(key) == content:
                return
            self._entries[key] = content
            with self._path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "content": content}, ensure_ascii=False) + "\n")


class ChatClient:
    """Asks an OpenAI-compatible ``/chat/completions`` endpoint for JSON (thread-safe).

    A context manager; ``close`` is idempotent.
    """

    def __init__(self, config: LLMConfig, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._chat_client = SyncChat(config.endpoint, transport=transport)
        self._sleep = sleep
        self._minimal = False
        """Set after an HTTP 400: requests go without ``seed`` and ``response_format``."""
        self._cache = _Cache(config.cache_path) if config.cache_path else None

    @property
    def requests(self) -> int:
        """HTTP requests sent so far (cache hits excluded)."""
        return self._chat_client.requests

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._chat_client.close()

    def _body(self, messages: list[dict[str, str]], seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
        }
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        if not self._minimal:
            body["seed"] = seed
            if self.config.json_mode:
                body["response_format"] = {"type": "json_object"}
        return body

    def _send(self, messages: list[dict[str, str]], seed: int) -> ChatCompletion:
        try:
            return self._chat_client.post(self._body(messages, seed))
        except ChatHTTPError as exc:
            if exc.status != 400 or self._minimal:
                raise
        # Some servers refuse response_format or seed; ask once more, and from now on, without.
        self._minimal = True
        return self._chat_client.post(self._body(messages, seed))

    def _chat(self, messages: list[dict[str, str]], seed: int, stage: str) -> str:
        """The assistant's text for one request.

        Raises a retryable ``ChatError`` (a ``ChatBadReply`` counts as one: a proxy's error page is
        worth another try), ``ReplyError`` or ``LLMConfigError``.
        """
        try:
            completion = self._send(messages, seed)
        except ChatHTTPError as exc:
            if exc.retryable:
                raise
            raise LLMConfigError(
                f"the LLM endpoint {self.config.url} refused the request with HTTP {exc.status}: "
                f"{exc.text[:300]} (check --llm-base-url, --llm-model and {API_KEY_ENV})",
                stage=stage, attempts=1,
            ) from None
        if completion.content is None:
            raise ReplyError("the reply has no text content")
        if completion.finish_reason == "length":
            raise ReplyError("the reply was cut off at the length limit; answer more briefly")
        return completion.content

    def complete_json(self, stage: str, system: str, payload: dict[str, Any],
                      validate: Callable[[dict[str, Any]], T], *, seed: int = 0) -> T:
        """Ask for a JSON object: ``system`` instructions, ``payload`` as the input; returns ``validate(reply)``.

        ``validate`` raises ``ReplyError`` to have the model repair it.
        """
        base = [
            {"role": "system", "content": system},
            {"role": "user", "content": "INPUT\n" + json.dumps(payload, ensure_ascii=False, indent=1)},
        ]
        key = hashlib.sha256(json.dumps(
            [self.config.model, base, seed, self.config.temperature], ensure_ascii=False,
        ).encode("utf-8")).hexdigest()
        if self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None:
                try:
                    return validate(parse_json_reply(cached))
                except ReplyError:
                    pass  # the validator changed since; ask the model again
        messages = list(base)
        failures: list[str] = []
        transient_last = False
        transient = 0
        for attempt in range(self.config.max_attempts):
            try:
                content = self._chat(messages, seed, stage)
            except ReplyError as exc:  # no text, or cut off: ask again as it was
                failures.append(f"attempt {attempt + 1}: {exc}")
                transient_last = False
                continue
            except ChatError as exc:  # transport, 429/5xx, no chat completion (others: LLMConfigError)
                failures.append(f"attempt {attempt + 1}: {exc}")
                transient_last = True
                if attempt + 1 < self.config.max_attempts:
                    self._sleep(self._chat_client.endpoint.backoff(transient, exc.retry_after_s))
                    transient += 1
                continue
            try:
                result = validate(parse_json_reply(content))
            except ReplyError as exc:
                failures.append(f"attempt {attempt + 1}: {exc}")
                transient_last = False
                messages = [*base, {"role": "assistant", "content": content[:20_000]},
                            {"role": "user", "content": f"Your reply was rejected: {exc}. Reply again with "
                             "only the corrected JSON object, in the format the instructions give."}]
                continue
            if self._cache is not None:
                self._cache.put(key, content)
            return result
        cls: type[LLMError] = LLMUnavailable if transient_last else LLMReplyInvalid
        attempts = self.config.max_attempts
        raise cls(f"{stage}: no usable reply in {attempts} attempt(s); last: {failures[-1]}",
                  stage=stage, attempts=attempts, failures=tuple(failures))
