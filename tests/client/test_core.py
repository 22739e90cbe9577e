"""Unit tests of the client's I/O-free core and of its error mapping.

``httpx.MockTransport`` stands in for the network here: these tests check how the client
reads answers (status codes, error bodies, ``Retry-After``, lost connections), not any server
feature; every answer they feed it is built with the server's own serializer
(``ToolGymError.to_wire`` and ``http_status``). The live-server tests are the other files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from toolgym import errors
from toolgym.client import AsyncEnvClient, EnvClient, ResetResult, RetryPolicy, StepResult, _core
from toolgym.errors import ToolGymError, http_status

FAST = RetryPolicy(max_retries=3, backoff_s=0.001, max_backoff_s=0.002)
RESET_BODY = {"episode_id": "ep-x-1", "observation": {"messages": []}, "info": {"status": "ok"}}
STEP_BODY = {"observation": {"messages": []}, "reward": 1, "terminated": True, "truncated": False,
             "info": {"status": "ok", "reason": "answered"}}


def wire(exc: ToolGymError) -> httpx.Response:
    """The answer a ToolGym server gives for ``exc`` (``server/errors.py`` in short)."""
    headers = {"Retry-After": "1"} if isinstance(exc, errors.Unavailable) else {}
    return httpx.Response(http_status(exc), json=exc.to_wire(), headers=headers)


class Script:
    """A MockTransport handler that answers from a list, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(script: Script, retry: RetryPolicy = FAST) -> EnvClient:
    return EnvClient("http://toolgym.test", "key-1", transport=httpx.MockTransport(script), retry=retry)


# --- pure helpers -------------------------------------------------------------------------------
def test_action_to_json_keeps_strings_and_the_two_message_fields() -> None:
    assert _core.action_to_json("<tool_call>{}</tool_call>") == "<tool_call>{}</tool_call>"
    message = {"role": "assistant", "content": "hi", "tool_calls": [], "reasoning_content": "r", "refusal": None}
    assert _core.action_to_json(message) == {"content": "hi", "tool_calls": []}
    for bad in (["not", "an", "action"], {"foo": "bar"}, {"content": "hi", "logprobs": [1]}):
        with pytest.raises(errors.ValidationFailed, match="not a valid action"):
            _core.action_to_json(bad)


def test_every_step_carries_an_idempotency_key() -> None:
    first = _core.step_call("ep-1", "a", None, None, None)
    second = _core.step_call("ep-1", "a", None, None, None)
    assert first.headers["Idempotency-Key"] != second.headers["Idempotency-Key"]
    assert first.safe_to_repeat
    given = _core.step_call("ep-1", "a", 3, "my-key", -0.5)
    assert given.headers["Idempotency-Key"] == "my-key"
    assert given.json == {"action": "a", "expected_turn": 3, "mean_logprob": -0.5}


def test_reset_call_sends_only_what_is_given() -> None:
    assert _core.reset_call("toolgym/ToolUse-v0", None, None, None).json == {"env_id": "toolgym/ToolUse-v0"}
    call = _core.reset_call("toolgym/ToolUse-v0", "t1", 0, {"max_turns": 3})
    assert call.json == {"env_id": "toolgym/ToolUse-v0", "task_id": "t1", "seed": 0, "options": {"max_turns": 3}}
    assert call.safe_to_repeat and call.headers["Idempotency-Key"]  # a retry gets the same episode


def test_register_tasks_call_is_one_json_record_per_line() -> None:
    call = _core.register_tasks_call("toolgym/CodeMath-v0", [{"question": "1+1 ünd", "answer": "2"}, {"id": "x"}])
    assert call.headers["Content-Type"] == "application/x-ndjson"
    assert call.content is not None
    lines = call.content.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"question": "1+1 ünd", "answer": "2"}, {"id": "x"}]


def test_retry_delay_backs_off_exponentially_with_upward_jitter() -> None:
    policy = RetryPolicy(max_retries=5, backoff_s=0.25, max_backoff_s=10.0)
    for attempt in range(6):
        base = min(10.0, 0.25 * 2**attempt)
        for _ in range(50):
            assert base <= policy.delay(attempt, None) <= min(10.0, 1.5 * base)


def test_retry_delay_honours_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_s=0.01, max_backoff_s=3.0)
    for _ in range(50):
        assert 2.0 <= policy.delay(0, 2.0) <= 3.0  # never earlier than the server asked
        assert policy.delay(0, 60.0) == 3.0  # the caller's cap wins over a long Retry-After


# --- error mapping ------------------------------------------------------------------------------
ERRORS: list[tuple[ToolGymError, int, dict[str, Any]]] = [
    (errors.BadRequest("the request body is not valid JSON"), 400, {}),
    (errors.Unauthorized("unknown API key"), 401, {}),
    (errors.NotFound("no route GET /v2/x"), 404, {}),
    (errors.EnvNotFound("toolgym/tooluse-v0", "toolgym/ToolUse-v0"), 404,
     {"env_id": "toolgym/tooluse-v0", "suggestion": "toolgym/ToolUse-v0"}),
    (errors.EnvNotFound("nothing/like-it", None), 404, {"suggestion": None}),
    (errors.TaskNotFound("toolgym/ToolUse-v0", "t-9"), 404, {"env_id": "toolgym/ToolUse-v0", "task_id": "t-9"}),
    (errors.EpisodeNotFound("ep-1"), 404, {"episode_id": "ep-1"}),
    (errors.EpisodeFinished("ep-1", "max_turns"), 409, {"episode_id": "ep-1", "reason": "max_turns"}),
    (errors.TurnMismatch("ep-1", 5, 2), 409, {"expected_turn": 5, "turn": 2}),
    (errors.DuplicateTask("toolgym/CodeMath-v0", "t-1"), 409, {"task_id": "t-1"}),
    (errors.PayloadTooLarge("action of 9 characters", max_action_chars=8), 413, {"max_action_chars": 8}),
    (errors.ValidationFailed("options.max_turns: too big", option="max_turns"), 422, {"option": "max_turns"}),
    (errors.QuotaExceeded("this API key has 4 open episodes"), 429, {}),
]


@pytest.mark.parametrize(("exc", "status", "attrs"), ERRORS, ids=lambda v: getattr(v, "code", None))
def test_error_answers_map_back_to_their_class(exc: ToolGymError, status: int, attrs: dict[str, Any]) -> None:
    script = Script(wire(exc))
    with client(script) as c, pytest.raises(ToolGymError) as caught:
        c.reset("toolgym/ToolUse-v0")
    got = caught.value
    assert type(got) is type(exc)
    assert http_status(exc) == status
    assert got.code == exc.code and str(got) == exc.message and got.message == exc.message
    for name, value in attrs.items():
        assert getattr(got, name) == value
    assert len(script.requests) == 1  # a 4xx is never retried


@pytest.mark.parametrize("exc", [
    errors.AtCapacity("256 episodes are open (max_live_episodes)", retry_after_s=2.0),
    errors.ShuttingDown("shutting down", retry_after_s=5.0),
    errors.SandboxError("the sandbox failed twice", retry_after_s=1.0),
    errors.SandboxTimeout("the sandbox stopped answering"),
    errors.Unavailable("busy"),
], ids=lambda e: e.code)
def test_503s_are_retried_then_raised_as_their_class(exc: errors.Unavailable) -> None:
    script = Script(wire(exc))
    with client(script) as c, pytest.raises(type(exc)) as caught:
        c.reset("toolgym/ToolUse-v0")
    assert type(caught.value) is type(exc)
    assert caught.value.retryable and caught.value.retry_after_s == 1.0  # from the Retry-After header
    assert len(script.requests) == FAST.max_retries + 1


def test_unknown_code_from_a_newer_server_falls_back_on_the_status() -> None:
    body = {"error": {"code": "episode_archived", "message": "archived", "retryable": False}}
    with client(Script(httpx.Response(404, json=body))) as c, pytest.raises(errors.NotFound, match="archived"):
        c.episode("ep-1")


def test_a_non_toolgym_error_page_is_a_toolgym_error() -> None:
    script = Script(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with client(script) as c, pytest.raises(ToolGymError, match="Bad Gateway") as caught:
        c.envs()
    assert type(caught.value) is ToolGymError and len(script.requests) == 1


def test_a_proxy_503_page_is_unavailable_and_retried() -> None:
    script = Script(httpx.Response(503, text="upstream busy", headers={"Retry-After": "0"}),
                    httpx.Response(200, json={"envs": []}))
    with client(script) as c:
        assert c.envs() == []
    assert len(script.requests) == 2


# --- retries ------------------------------------------------------------------------------------
def test_a_retried_step_resends_the_same_idempotency_key() -> None:
    script = Script(wire(errors.SandboxError("replaced; retry the step")), httpx.Response(200, json=STEP_BODY))
    with client(script) as c:
        result = c.step("ep-1", "answer")
    assert result == StepResult({"messages": []}, 1.0, True, False, {"status": "ok", "reason": "answered"})
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 2 and len(keys) == 1


def test_lost_step_and_reset_answers_are_retried_with_the_same_key() -> None:
    lost = httpx.ReadTimeout("timed out")
    for script, act in (
        (Script(lost, httpx.Response(200, json=STEP_BODY)), lambda c: c.step("ep-1", "answer")),
        (Script(lost, httpx.Response(201, json=RESET_BODY)), lambda c: c.reset("toolgym/ToolUse-v0")),
    ):
        with client(script) as c:
            act(c)
        assert len(script.requests) == 2
        keys = {r.headers["Idempotency-Key"] for r in script.requests}
        assert len(keys) == 1  # the server answers the retry from the first attempt


def test_a_refused_connection_is_retried_even_for_a_reset() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(201, json=RESET_BODY))
    with client(script) as c:
        assert c.reset("toolgym/ToolUse-v0") == ResetResult("ep-x-1", {"messages": []}, {"status": "ok"})
    assert len(script.requests) == 2


def test_no_server_at_all_is_unavailable_naming_the_cause() -> None:
    script = Script(httpx.ConnectError("connection refused"))
    with client(script, RetryPolicy(max_retries=0)) as c, pytest.raises(errors.Unavailable, match="connect"):
        c.health()
    assert len(script.requests) == 1


def test_the_key_is_sent_as_a_bearer_token() -> None:
    script = Script(httpx.Response(200, json={"status": "ok"}))
    with client(script) as c:
        c.health()
    assert script.requests[0].headers["Authorization"] == "Bearer key-1"
    with EnvClient("http://toolgym.test", transport=httpx.MockTransport(script)) as anonymous:
        anonymous.health()
    assert "Authorization" not in script.requests[1].headers


# --- the async client shares all of it ------------------------------------------------------------
async def test_async_client_maps_errors_and_retries_the_same_way() -> None:
    script = Script(wire(errors.AtCapacity("full", retry_after_s=2.0)), wire(errors.AtCapacity("full")),
                    httpx.Response(201, json=RESET_BODY))
    async with AsyncEnvClient("http://toolgym.test", transport=httpx.MockTransport(script), retry=FAST) as c:
        assert (await c.reset("toolgym/ToolUse-v0")).episode_id == "ep-x-1"
        assert len(script.requests) == 3
        script.answers = [wire(errors.EpisodeFinished("ep-x-1", "answered"))]
        with pytest.raises(errors.EpisodeFinished) as caught:
            await c.step("ep-x-1", "again")
        assert caught.value.reason == "answered"
        script.answers = [httpx.ReadTimeout("lost"), httpx.Response(200, json=STEP_BODY)]
        before = len(script.requests)
        assert (await c.step("ep-x-1", "again")).reward == 1.0
        sent = script.requests[before:]
        assert len(sent) == 2 and sent[0].headers["Idempotency-Key"] == sent[1].headers["Idempotency-Key"]


@pytest.mark.parametrize("make", [
    lambda: _core.trajectory_call("ep-1"),
    lambda: _core.close_call("ep-1"),
])
def test_readers_of_non_json_answers(make: Callable[[], _core.Call]) -> None:
    call = make()
    jsonl = '{"turn": null, "episode_id": "ep-1"}\n{"turn": 0, "reward": 0.5}\n'
    response = httpx.Response(200, text=jsonl) if call.method == "GET" else httpx.Response(204)
    result = _core.Exchange(call, FAST).settle(response)
    if call.method == "GET":
        assert result == [{"turn": None, "episode_id": "ep-1"}, {"turn": 0, "reward": 0.5}]
    else:
        assert result is None
