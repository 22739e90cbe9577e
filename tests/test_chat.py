"""``toolgym.chat``, the one client of OpenAI-compatible chat endpoints, against a scripted
endpoint on loopback: what a reply becomes, which failures are retried and for how long, and
that a key is sent but never shown. Both clients (sync and async) meet the same script."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from toolgym.chat import (
    AsyncChat,
    ChatBadReply,
    ChatCompletion,
    ChatEndpoint,
    ChatError,
    ChatHTTPError,
    ChatTimeout,
    ChatUnreachable,
    SyncChat,
    completions_url,
)

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Answer:
    """One scripted response: ``trickle_s`` sends the body a byte at a time, that far apart."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    trickle_s: float = 0.0


def completion(content: str | None = "hello", **message: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content,
                                                                          **message}}]}


@dataclass
class Script:
    answers: list[Answer] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def play(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.seen.clear()


@pytest.fixture
def script() -> Iterator[Script]:
    state = Script()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with lock:
                state.seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                answer = state.answers.pop(0) if len(state.answers) > 1 else state.answers[0]
            time.sleep(answer.delay_s)
            data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if answer.trickle_s:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(answer.trickle_s)
                else:
                    self.wfile.write(data)
            except OSError:
                pass  # the client gave up

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def sync_post(endpoint: ChatEndpoint, *, retried: bool = False) -> tuple[ChatCompletion | ChatError, int]:
    with SyncChat(endpoint) as chat:
        try:
            return (chat.complete(BODY) if retried else chat.post(BODY)), chat.requests
        except ChatError as exc:
            return exc, chat.requests


def async_post(endpoint: ChatEndpoint, *, retried: bool = False) -> tuple[ChatCompletion | ChatError, int]:
    async def go() -> tuple[ChatCompletion | ChatError, int]:
        async with AsyncChat(endpoint) as chat:
            try:
                return (await chat.complete(BODY) if retried else await chat.post(BODY)), chat.requests
            except ChatError as exc:
                return exc, chat.requests

    return asyncio.run(go())


CLIENTS = pytest.mark.parametrize("post", [sync_post, async_post], ids=["sync", "async"])


@CLIENTS
def test_a_reply_is_a_typed_completion_and_the_key_is_sent_never_shown(script: Script, post: Any) -> None:
    calls = [{"id": "x1", "type": "function", "function": {"name": "f", "arguments": "{}"}}, "junk"]
    script.play(Answer(body=completion(None, tool_calls=calls)))
    endpoint = ChatEndpoint.from_env(script.url, "TEST_CHAT_KEY", {"TEST_CHAT_KEY": "sk-secret-1"})
    reply, requests = post(endpoint)
    assert isinstance(reply, ChatCompletion) and requests == 1
    assert reply.content is None and reply.finish_reason == "stop"
    assert reply.tool_calls == (calls[0],)
    assert script.seen[0]["path"] == "/v1/chat/completions" and script.seen[0]["body"] == BODY
    assert script.seen[0]["auth"] == "Bearer sk-secret-1"
    assert "sk-secret-1" not in repr(endpoint)
    assert ChatEndpoint.from_env(script.url, "TEST_CHAT_KEY", {}).api_key is None


@CLIENTS
def test_a_timeout_is_a_total_deadline_and_names_its_knob(script: Script, post: Any) -> None:
    endpoint = ChatEndpoint(script.url, request_timeout_s=1.0, timeout_knob="judge_timeout_s")
    for answer in (Answer(body=completion(), delay_s=4.0), Answer(body=completion("x" * 40), trickle_s=0.1)):
        script.play(answer)
        started = time.monotonic()
        error, _ = post(endpoint)
        assert time.monotonic() - started < 2.5, "the deadline covers the whole reply, not each read"
        assert isinstance(error, ChatTimeout) and error.retryable
        assert "within 1 s (raise judge_timeout_s)" in str(error)


@CLIENTS
def test_429_and_5xx_are_retried_as_told_then_reported(script: Script, post: Any) -> None:
    flaky = (Answer(429, {"error": "slow down"}, {"Retry-After": "0"}), Answer(503, {"error": "warming up"}))
    script.play(*flaky, Answer(body=completion("at last")))
    reply, requests = post(ChatEndpoint(script.url, max_retries=2, backoff_s=0.01), retried=True)
    assert isinstance(reply, ChatCompletion) and reply.content == "at last" and requests == 3

    script.play(*flaky, Answer(body=completion("too late")))
    error, requests = post(ChatEndpoint(script.url, max_retries=1, backoff_s=0.01), retried=True)
    assert isinstance(error, ChatHTTPError) and (error.status, error.attempts, requests) == (503, 2, 2)
    assert error.retryable and "HTTP 503" in str(error) and "warming up" in error.text


@CLIENTS
def test_a_refusal_and_a_reply_that_is_no_completion_are_not_retried(script: Script, post: Any) -> None:
    endpoint = ChatEndpoint(script.url, max_retries=3, backoff_s=0.01, max_reply_bytes=1000)
    script.play(Answer(401, {"error": {"message": "bad key"}}))
    error, requests = post(endpoint, retried=True)
    assert isinstance(error, ChatHTTPError) and error.status == 401 and not error.retryable and requests == 1
    for body, problem in ((b"<html>bad gateway</html>", "no JSON"), ({"object": "list"}, "choices[0].message"),
                          (completion("y" * 2000), "max_reply_bytes=1000")):
        script.play(Answer(body=body))
        error, requests = post(endpoint, retried=True)
        assert isinstance(error, ChatBadReply) and problem in str(error) and requests == 1, error


@CLIENTS
def test_an_endpoint_nobody_listens_on_is_unreachable(post: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error, requests = post(ChatEndpoint(f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.01),
                           retried=True)
    assert isinstance(error, ChatUnreachable) and error.retryable and error.attempts == 2 and requests == 2


def test_settings_are_checked_and_urls_normalized() -> None:
    assert completions_url("http://h/v1/") == "http://h/v1/chat/completions"
    assert completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    with pytest.raises(ValueError, match="http:// or https://"):
        ChatEndpoint("127.0.0.1:8001/v1")
    with pytest.raises(ValueError, match="judge_timeout_s must be positive"):
        ChatEndpoint("http://h/v1", request_timeout_s=0, timeout_knob="judge_timeout_s")
    endpoint = ChatEndpoint("http://h/v1", backoff_s=1.0, max_backoff_s=5.0)
    assert endpoint.backoff(0, retry_after_s=2.0) == 2.0 and endpoint.backoff(0, retry_after_s=60.0) == 5.0
    assert 0.5 <= endpoint.backoff(0) <= 1.0 and 2.5 <= endpoint.backoff(10) <= 5.0
