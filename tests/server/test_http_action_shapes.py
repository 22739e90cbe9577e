"""An action of no valid shape is refused at every HTTP entry, never taken as an empty reply.

Valid: a string (the raw assistant turn) or an assistant message with ``content`` and/or
``tool_calls``. ``{"foo": "bar"}`` used to reach the env as an empty message (ToolUse's -0.5
format penalty, ``status: ok``); now the single step, every item of a batch step and the judge
route answer 422 ``validation_failed`` with a message naming the valid shapes, and the episode
stays at its turn. Real servers on loopback (process backend: no Docker needed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from server_kit import WITNESS_ACTION, WITNESS_TASK, expect_error, openai_message, reset, state, step

from toolgym.actions import ACTION_SHAPE
from toolgym.server.embedded import free_port

BAD_ACTIONS: list[Any] = [
    {"foo": "bar"},
    {},
    {"role": "assistant"},
    {"role": "user", "content": "hi"},
    {"content": 5},
    {"content": "x", "tool_calls": "not a list"},
    {"content": "x", "tool_calls": ["not an object"]},
    ["a", "list"],
    3,
    None,
]


def _check_refusal(response: httpx.Response, field: str = "action") -> None:
    error = expect_error(response, 422, "validation_failed")
    assert error["message"].startswith(f"{field}: {field} is not a valid action ("), error
    assert ACTION_SHAPE in error["message"], error


@pytest.fixture
def http(server_factory: Callable[..., Any]) -> Any:
    server = server_factory("process", warm_pool_size=0)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("bad", BAD_ACTIONS, ids=repr)
def test_single_step_refuses_a_bad_shape_and_the_episode_stays(http: httpx.Client, bad: Any) -> None:
    episode_id = reset(http, WITNESS_TASK)["episode_id"]
    _check_refusal(http.post(f"/v1/episodes/{episode_id}/step", json={"action": bad}))
    current = state(http, episode_id)
    assert (current["turn"], current["status"], current["steps"]) == (0, "live", [])
    result = step(http, episode_id, WITNESS_ACTION, expected_turn=0)
    assert result["info"]["status"] == "ok" and result["reward"] != -0.5, result


def test_an_assistant_message_with_its_ignored_keys_still_steps(http: httpx.Client) -> None:
    episode_id = reset(http, WITNESS_TASK)["episode_id"]
    message = {**openai_message({"name": "get_city_info", "arguments": {"city": "Varnholt"}}),
               "reasoning_content": "look it up", "refusal": None}
    assert step(http, episode_id, message)["info"]["status"] == "ok"
    assert state(http, episode_id)["turn"] == 1


def test_batch_step_refuses_a_bad_item_and_runs_nothing(http: httpx.Client) -> None:
    good = reset(http, WITNESS_TASK)["episode_id"]
    other = reset(http, WITNESS_TASK)["episode_id"]
    r = http.post("/v1/batch/step", json={"steps": [
        {"episode_id": good, "action": WITNESS_ACTION},
        {"episode_id": other, "action": {"foo": "bar"}},
    ]})
    error = expect_error(r, 422, "validation_failed")
    assert "not a valid action" in error["message"] and ACTION_SHAPE in error["message"], error
    assert state(http, good)["turn"] == 0 and state(http, other)["turn"] == 0


def test_judge_refuses_a_bad_response_shape(server_factory: Callable[..., Any]) -> None:
    # A judge that is never reached: the shape is refused before the route runs.
    server = server_factory("process", warm_pool_size=0, judge_base_url=f"http://127.0.0.1:{free_port()}/v1",
                            judge_model="m1,m2,m3")
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        url = "/v1/envs/toolgym/FunctionCall-v0/tasks/fc-math-001/judge"
        for bad in ({"foo": "bar"}, {}, ["x"]):
            _check_refusal(client.post(url, json={"response": bad}), field="response")
