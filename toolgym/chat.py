"""One client for OpenAI-compatible chat endpoints (``POST {base_url}/chat/completions``).

Three parts of ToolGym ask a model something, each with its own needs, and all of them
through this module so that a URL, a key, a timeout or a failure means the same thing
everywhere:

- ``toolgym eval``'s model policy (``toolgym.eval.model``): async, retried;
- the LLM-driven task generator (``toolgym.taskgen.llm``): sync, from worker threads, its
  retries interleaved with repair turns (so it sends single requests with ``SyncChat.post``);
- the server's label judge (``toolgym.server.judge``): async, one request per vote, never
  retried (a failed vote is reported, the caller retries the judgement).

A ``ChatEndpoint`` says where and how: the URL (the API root such as
``http://127.0.0.1:8001/v1``, or the full ``.../chat/completions`` URL), the API key (sent as
``Authorization: Bearer``; ``from_env`` reads it from the variable of the caller's scope, and
no repr shows it), ``request_timeout_s`` (a *total* deadline per request, reply included, not
httpx's per-read one), the largest reply accepted, and the retry policy of ``complete``.
``timeout_knob`` names the setting a user changes to raise the timeout, so a timeout error
tells them which one.

A reply is a typed ``ChatCompletion`` (content, tool calls, finish reason, raw body); every
failure is one of::

    ChatError             a request got no chat completion
    ├── ChatTimeout       no full reply within request_timeout_s              (retryable)
    ├── ChatUnreachable   connection refused or reset, DNS, protocol error    (retryable)
    ├── ChatHTTPError     HTTP >= 400; retryable for 429 and 5xx (Retry-After kept)
    └── ChatBadReply      a success that is no chat completion (not JSON, no
                          choices[0].message, larger than max_reply_bytes)

These never cross ToolGym's HTTP API (the server's judge turns them into failed votes), so
they are not part of the server's error tree in ``toolgym.errors``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = [
    "AsyncChat",
    "ChatBadReply",
    "ChatCompletion",
    "ChatEndpoint",
    "ChatError",
    "ChatHTTPError",
    "ChatTimeout",
    "ChatUnreachable",
    "SyncChat",
    "completions_url",
]

EXCERPT_CHARS = 300
"""How much of a reply body an error message quotes."""


def completions_url(base_url: str) -> str:
    """``{base_url}/chat/completions``, unless ``base_url`` already ends with it."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


# --- errors -------------------------------------------------------------------------------------
class ChatError(Exception):
    """A request to a chat endpoint got no chat completion.

    ``retryable`` says whether the same request may succeed later (after ``retry_after_s`` when
    the endpoint said so); ``attempts`` how many requests ``complete`` made.
    """

    transient = False

    def __init__(self, message: str, *, url: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.retry_after_s = retry_after_s
        self.attempts = 1

    @property
    def retryable(self) -> bool:
        """Whether asking again may help."""
        return self.transient


class ChatTimeout(ChatError):
    """No full reply within the endpoint's ``request_timeout_s``; the message names the knob."""

    transient = True


class ChatUnreachable(ChatError):
    """The request did not get through (connection refused or reset, DNS, protocol error)."""

    transient = True


class ChatHTTPError(ChatError):
    """The endpoint answered HTTP >= 400.

    429 and 5xx are worth retrying (after ``retry_after_s`` when the endpoint said so); any other
    status means the request itself is refused (URL, model, key, body), and asking again changes
    nothing.
    """

    def __init__(self, message: str, *, url: str, status: int, text: str,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, url=url, retry_after_s=retry_after_s)
        self.status = status
        self.text = text

    @property
    def retryable(self) -> bool:
        """True for 429 and 5xx."""
        return self.status == 429 or self.status >= 500


class ChatBadReply(ChatError):
    """A success status whose body is no chat completion; ``text`` is the body."""

    def __init__(self, message: str, *, url: str, text: str = "") -> None:
        super().__init__(message, url=url)
        self.text = text


# --- the endpoint and the reply -------------------------------------------------------------------
@dataclass(frozen=True)
class ChatEndpoint:
    """Where a chat endpoint is, how to authenticate, and how long and how often to try."""

    base_url: str
    """The API root (``http://127.0.0.1:8001/v1``) or the full ``.../chat/completions`` URL."""
    api_key: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer``; never shown in a repr."""
    request_timeout_s: float = 120.0
    """Total time one request may take, reply included."""
    timeout_knob: str = "request_timeout_s"
    """The setting a user raises when requests time out, named in ``ChatTimeout``."""
    max_reply_bytes: int = 1 << 20
    """A longer reply is refused (``ChatBadReply``) rather than held in memory."""
    max_retries: int = 0
    """Further requests ``complete`` makes after a retryable failure."""
    backoff_s: float = 0.5
    """First wait before a retry; doubles per retry (with jitter), up to ``max_backoff_s``."""
    max_backoff_s: float = 30.0
    """Cap on any wait, ``Retry-After`` included."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"a chat endpoint's URL must start with http:// or https://, got {self.base_url!r}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"{self.timeout_knob} must be positive, got {self.request_timeout_s!r}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.max_reply_bytes <= 0:
            raise ValueError("max_retries, backoff_s and max_backoff_s must be >= 0, max_reply_bytes positive")

    @classmethod
    def from_env(cls, base_url: str, key_env: str, environ: Mapping[str, str] | None = None,
                 **options: Any) -> ChatEndpoint:
        """An endpoint whose key comes from the environment variable ``key_env``.

        Keys never travel on a command line, where ``ps`` would show them; ``environ`` defaults to
        ``os.environ``.
        """
        env = os.environ if environ is None else environ
        return cls(base_url, api_key=env.get(key_env) or None, **options)

    @property
    def url(self) -> str:
        """The URL requests are posted to."""
        return completions_url(self.base_url)

    def headers(self) -> dict[str, str]:
        """The request headers: JSON, and the key when there is one."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def backoff(self, retry: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first), at most ``max_backoff_s``.

        What the endpoint's ``Retry-After`` asked, else ``backoff_s * 2**retry`` less up to half (so
        that clients that failed together do not come back together).
        """
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_backoff_s)
        return min(self.backoff_s * 2.0**retry, self.max_backoff_s) * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class ChatCompletion:
    """The first choice of a chat completion."""

    content: str | None
    """The assistant's text (None when the endpoint sent none, or no string)."""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """The message's ``tool_calls`` as sent (each a JSON object; anything else is dropped)."""
    finish_reason: str | None = None
    """``stop``, ``length`` (cut off at ``max_tokens``), ``tool_calls``..."""
    text: str = ""
    """The raw response body, for messages about a reply the caller cannot use."""


def _completion(status: int, text: str, url: str) -> ChatCompletion:
    try:
        body = json.loads(text)
    except ValueError:
        raise ChatBadReply(f"{url} answered HTTP {status} with no JSON: {text[:EXCERPT_CHARS]!r}",
                           url=url, text=text) from None
    try:
        choice = body["choices"][0]
        message = choice["message"]
        if not isinstance(message, Mapping):
            raise TypeError(type(message).__name__)
    except (LookupError, TypeError):
        raise ChatBadReply(f"{url} answered HTTP {status} without a chat completion (no choices[0].message):"
                           f" {text[:EXCERPT_CHARS]!r}", url=url, text=text) from None
    content = message.get("content")
    calls = message.get("tool_calls")
    finish = choice.get("finish_reason") if isinstance(choice, Mapping) else None
    return ChatCompletion(
        content=content if isinstance(content, str) else None,
        tool_calls=tuple(c for c in calls if isinstance(c, Mapping)) if isinstance(calls, list) else (),
        finish_reason=finish if isinstance(finish, str) else None,
        text=text,
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back on the backoff


def _read(endpoint: ChatEndpoint, status: int, retry_after: str | None, data: bytes) -> ChatCompletion:
    """The completion in a response, or the ``ChatError`` its status means."""
    text = data.decode("utf-8", "replace")
    url = endpoint.url
    if status >= 400:
        raise ChatHTTPError(f"{url} answered HTTP {status}: {text[:EXCERPT_CHARS]}", url=url, status=status,
                            text=text, retry_after_s=_retry_after(retry_after))
    return _completion(status, text, url)


def _too_large(endpoint: ChatEndpoint) -> ChatBadReply:
    return ChatBadReply(f"{endpoint.url} sent a reply larger than max_reply_bytes={endpoint.max_reply_bytes}",
                        url=endpoint.url)


def _timeout(endpoint: ChatEndpoint) -> ChatTimeout:
    return ChatTimeout(f"{endpoint.url} gave no complete reply within {endpoint.request_timeout_s:g} s"
                       f" (raise {endpoint.timeout_knob})", url=endpoint.url)


def _unreachable(endpoint: ChatEndpoint, exc: Exception) -> ChatUnreachable:
    return ChatUnreachable(f"{endpoint.url} is unreachable: {type(exc).__name__}: {exc}", url=endpoint.url)


# --- the clients ----------------------------------------------------------------------------------
class SyncChat:
    """A blocking client of one endpoint, safe to share between threads.

    A context manager; ``close`` is idempotent. ``requests`` counts the requests sent.
    """

    def __init__(self, endpoint: ChatEndpoint, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoint = endpoint
        self._http = httpx.Client(headers=endpoint.headers(), transport=transport,
                                  timeout=httpx.Timeout(endpoint.request_timeout_s))
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests = 0

    def __enter__(self) -> SyncChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def post(self, body: Mapping[str, Any]) -> ChatCompletion:
        """One request (``body`` is the OpenAI request: model, messages...), read in full under the size cap.

        The total deadline is checked as each chunk arrives; an endpoint that goes silent meets
        httpx's read timeout, of the same length. Raises a ``ChatError``.
        """
        with self._lock:
            self.requests += 1
        endpoint = self.endpoint
        deadline = time.monotonic() + endpoint.request_timeout_s
        try:
            with self._http.stream("POST", endpoint.url, json=dict(body)) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > endpoint.max_reply_bytes:
                        raise _too_large(endpoint)
                    if time.monotonic() > deadline:
                        raise _timeout(endpoint)
                    chunks.append(chunk)
                status, retry_after = response.status_code, response.headers.get("retry-after")
        except httpx.TimeoutException:
            raise _timeout(endpoint) from None
        except httpx.TransportError as exc:
            raise _unreachable(endpoint, exc) from None
        return _read(endpoint, status, retry_after, b"".join(chunks))

    def complete(self, body: Mapping[str, Any]) -> ChatCompletion:
        """``post``, retried ``max_retries`` times after a retryable failure (waits per ``ChatEndpoint.backoff``).

        Raises the last ``ChatError``, ``attempts`` set.
        """
        for retry in range(self.endpoint.max_retries + 1):
            try:
                return self.post(body)
            except ChatError as exc:
                exc.attempts = retry + 1
                if not exc.retryable or retry >= self.endpoint.max_retries:
                    raise
                self._sleep(self.endpoint.backoff(retry, exc.retry_after_s))
        raise AssertionError("unreachable")


class AsyncChat:
    """An asyncio client of one endpoint (the same rules as ``SyncChat``); ``post`` may run concurrently.

    An async context manager; ``aclose`` is idempotent.
    """

    def __init__(self, endpoint: ChatEndpoint, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(headers=endpoint.headers(), transport=transport,
                                       timeout=httpx.Timeout(endpoint.request_timeout_s))
        self.requests = 0

    async def __aenter__(self) -> AsyncChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def post(self, body: Mapping[str, Any]) -> ChatCompletion:
        """One request, read in full within ``request_timeout_s`` in total and the size cap.

        Raises a ``ChatError``.
        """
        self.requests += 1
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(endpoint.request_timeout_s):
                async with self._http.stream("POST", endpoint.url, json=dict(body)) as response:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > endpoint.max_reply_bytes:
                            raise _too_large(endpoint)
                        chunks.append(chunk)
                    status, retry_after = response.status_code, response.headers.get("retry-after")
        except (TimeoutError, httpx.TimeoutException):
            raise _timeout(endpoint) from None
        except httpx.TransportError as exc:
            raise _unreachable(endpoint, exc) from None
        return _read(endpoint, status, retry_after, b"".join(chunks))

    async def complete(self, body: Mapping[str, Any]) -> ChatCompletion:
        """``post``, retried ``max_retries`` times after a retryable failure (waits per ``ChatEndpoint.backoff``).

        Raises the last ``ChatError``, ``attempts`` set.
        """
        for retry in range(self.endpoint.max_retries + 1):
            try:
                return await self.post(body)
            except ChatError as exc:
                exc.attempts = retry + 1
                if not exc.retryable or retry >= self.endpoint.max_retries:
                    raise
                await asyncio.sleep(self.endpoint.backoff(retry, exc.retry_after_s))
        raise AssertionError("unreachable")
