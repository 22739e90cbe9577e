"""Bad input over real HTTP: each answer is the one error shape of docs/architecture.md with the right
status and code (or, for a bad tool call, FTRL's tool-error message), and afterwards the
server is healthy, a second live episode still steps correctly, and no container is left.

One Docker-backed server with two API keys serves the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_kit import (
    ENV,
    ERROR_PREFIX,
    TASKS_URL,
    Server,
    ServerFarm,
    call,
    check_healthy,
    close,
    expect_error,
    openai_message,
    reset,
    state,
    step,
    tags,
    tool_message,
)

pytestmark = pytest.mark.docker

KEY_A, KEY_B = "key-alpha-0123456789", "key-bravo-9876543210"
MAX_ACTION_CHARS = 4096
MAX_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def server(farm: ServerFarm) -> Server:
    return farm.start("docker", api_keys=(KEY_A, KEY_B), max_action_chars=MAX_ACTION_CHARS,
                      max_request_bytes=MAX_REQUEST_BYTES)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY_A) as c:
        yield c


@pytest.fixture(scope="module")
def other(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY_B) as c:
        yield c


@pytest.fixture(scope="module")
def witness(client: httpx.Client) -> str:
    """A second live episode that every test checks still works."""
    return str(reset(client, "tu-single-1", max_turns=200, tool_timeout_s=1)["episode_id"])


@pytest.fixture
def episode(client: httpx.Client) -> Iterator[str]:
    episode_id = str(reset(client, "tu-multi-1", tool_timeout_s=1)["episode_id"])
    yield episode_id
    client.delete(f"/v1/episodes/{episode_id}")


def healthy(server: Server, client: httpx.Client, witness: str) -> None:
    check_healthy(server, client, witness)


JSON = {"content-type": "application/json"}


# --- malformed and unknown input -------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"{bad", b'{"env_id": "toolgym/ToolUse-v0",}', b'{"action": "x"', b"\x00"])
def test_malformed_json_is_400_bad_request(
    server: Server, client: httpx.Client, witness: str, episode: str, body: bytes
) -> None:
    for url in ("/v1/episodes", f"/v1/episodes/{episode}/step", TASKS_URL):
        err = expect_error(client.post(url, content=body, headers=JSON), 400, "bad_request")
        assert "JSON" in err["message"], err
        assert err["retryable"] is False
    assert state(client, episode)["turn"] == 0
    healthy(server, client, witness)


def test_body_that_is_not_utf8_is_400_bad_request(
    server: Server, client: httpx.Client, witness: str, episode: str
) -> None:
    body = '{"env_id": "toolgym/ToolUse-v0", "task_id": "\xff"}'.encode("latin-1")
    expect_error(client.post("/v1/episodes", content=body, headers=JSON), 400, "bad_request")
    body = '{"action": "caf\xe9"}'.encode("latin-1")
    expect_error(client.post(f"/v1/episodes/{episode}/step", content=body, headers=JSON), 400, "bad_request")
    assert state(client, episode)["turn"] == 0
    healthy(server, client, witness)


@pytest.mark.parametrize("field", ["rewardz", "task", "env"])
def test_unknown_field_in_reset_is_422_naming_it(
    server: Server, client: httpx.Client, witness: str, field: str
) -> None:
    open_before = server.manager.open_episodes
    r = client.post("/v1/episodes", json={"env_id": ENV, "task_id": "tu-single-1", field: 1})
    err = expect_error(r, 422, "validation_failed")
    assert field in err["message"], err
    assert server.manager.open_episodes == open_before
    healthy(server, client, witness)


@pytest.mark.parametrize("field", ["actions", "turn", "idempotency_key"])
def test_unknown_field_in_step_is_422_naming_it(
    server: Server, client: httpx.Client, witness: str, episode: str, field: str
) -> None:
    body = {"action": tags(call("find_manufacturer", product="Halcyon drone")), field: 0}
    err = expect_error(client.post(f"/v1/episodes/{episode}/step", json=body), 422, "validation_failed")
    assert field in err["message"], err
    assert state(client, episode)["turn"] == 0, "a refused step must not act"
    healthy(server, client, witness)


@pytest.mark.parametrize(("body", "named"), [
    ({"env_id": ENV, "task_id": "tu-single-1", "options": {"max_turnz": 3}}, "max_turnz"),
    ({"env_id": ENV, "task_id": "tu-single-1", "options": {"max_turns": "many"}}, "max_turns"),
    ({"env_id": ENV, "task_id": "tu-single-1", "options": {"reward": "solve_everything"}}, "reward"),
    ({"env_id": ENV, "task_id": "tu-single-1", "options": {"tool_timeout_s": 0}}, "tool_timeout_s"),
    ({"env_id": ENV, "task_id": "tu-single-1", "options": [1, 2]}, "options"),
    ({"env_id": ENV, "seed": -1}, "seed"),
    ({"task_id": "tu-single-1"}, "env_id"),
])
def test_bad_reset_values_are_422_naming_them(
    server: Server, client: httpx.Client, witness: str, body: dict[str, Any], named: str
) -> None:
    open_before = server.manager.open_episodes
    err = expect_error(client.post("/v1/episodes", json=body), 422, "validation_failed")
    assert named in err["message"], err
    assert server.manager.open_episodes == open_before
    healthy(server, client, witness)


@pytest.mark.parametrize("body", [{}, {"action": 17}, {"action": ["a"]}, {"action": {"tool_calls": "x"}},
                                  {"action": "x", "expected_turn": -1}, {"action": "x", "mean_logprob": "nan"}])
def test_bad_step_bodies_are_422(
    server: Server, client: httpx.Client, witness: str, episode: str, body: dict[str, Any]
) -> None:
    expect_error(client.post(f"/v1/episodes/{episode}/step", json=body), 422, "validation_failed")
    assert state(client, episode)["turn"] == 0
    healthy(server, client, witness)


def test_unknown_env_is_404_with_did_you_mean(server: Server, client: httpx.Client, witness: str) -> None:
    err = expect_error(client.post("/v1/episodes", json={"env_id": "toolgym/tooluse-v0"}), 404, "env_not_found")
    assert "did you mean" in err["message"] and "toolgym/ToolUse-v0" in err["message"], err
    assert err["details"]["suggestion"] == "toolgym/ToolUse-v0"
    err = expect_error(client.post("/v1/episodes", json={"env_id": "toolgym/ToolUse-v1"}), 404, "env_not_found")
    assert err["details"]["suggestion"] == "toolgym/ToolUse-v0"
    err = expect_error(client.get("/v1/envs/toolgym/TooolUse-v0/tasks"), 404, "env_not_found")
    assert "toolgym/ToolUse-v0" in err["message"]
    expect_error(client.post("/v1/envs/toolgym/TooolUse-v0/tasks", json={"tasks": [{}]}), 404, "env_not_found")
    err = expect_error(client.post("/v1/episodes", json={"env_id": "zzzz/Nothing-v9"}), 404, "env_not_found")
    assert "did you mean" not in err["message"]
    healthy(server, client, witness)


def test_unknown_task_is_404(server: Server, client: httpx.Client, witness: str) -> None:
    open_before = server.manager.open_episodes
    err = expect_error(client.post("/v1/episodes", json={"env_id": ENV, "task_id": "no-such-task"}),
                       404, "task_not_found")
    assert "no-such-task" in err["message"]
    assert server.manager.open_episodes == open_before
    healthy(server, client, witness)


def test_unknown_episode_is_404_everywhere(server: Server, client: httpx.Client, witness: str) -> None:
    missing = "ep-000000-doesnotexist"
    for method, url, body in [
        ("GET", f"/v1/episodes/{missing}", None),
        ("POST", f"/v1/episodes/{missing}/step", {"action": "hello"}),
        ("GET", f"/v1/episodes/{missing}/trajectory", None),
        ("POST", f"/v1/episodes/{missing}/fork", {}),
        ("DELETE", f"/v1/episodes/{missing}", None),
    ]:
        err = expect_error(client.request(method, url, json=body), 404, "episode_not_found")
        assert missing in err["message"]
    expect_error(client.get("/v1/no-such-route"), 404, "not_found")
    healthy(server, client, witness)


def test_another_keys_episode_is_404_not_403(
    server: Server, client: httpx.Client, other: httpx.Client, witness: str, episode: str
) -> None:
    action = {"action": tags(call("find_manufacturer", product="Halcyon drone"))}
    for method, url, body in [
        ("GET", f"/v1/episodes/{episode}", None),
        ("POST", f"/v1/episodes/{episode}/step", action),
        ("GET", f"/v1/episodes/{episode}/trajectory", None),
        ("POST", f"/v1/episodes/{episode}/fork", {}),
        ("DELETE", f"/v1/episodes/{episode}", None),
    ]:
        err = expect_error(other.request(method, url, json=body), 404, "episode_not_found")
        assert err["message"] == f"no episode {episode!r} for this API key", "must not reveal that it exists"
    listed = other.get("/v1/episodes").json()["episodes"]
    assert episode not in {e["episode_id"] for e in listed}
    # The owner's episode is untouched: not stepped, not closed.
    mine = state(client, episode)
    assert mine["turn"] == 0 and mine["status"] == "live"
    result = step(client, episode, action["action"])
    assert tool_message(result) == "Brightwell Dynamics"
    healthy(server, client, witness)


def test_step_after_the_end_is_409(server: Server, client: httpx.Client, witness: str, episode: str) -> None:
    final = step(client, episode, "I think it is Imara Solberg.")
    assert final["terminated"] and final["info"]["reason"] == "answered"
    for action in ("again", tags(call("find_manufacturer", product="Halcyon drone"))):
        err = expect_error(client.post(f"/v1/episodes/{episode}/step", json={"action": action}),
                           409, "episode_finished")
        assert err["details"]["reason"] == "answered"
    assert state(client, episode)["turn"] == 1
    assert server.backend.name == "docker"
    healthy(server, client, witness)


def test_step_after_delete_is_409(server: Server, client: httpx.Client, witness: str) -> None:
    episode_id = reset(client, "tu-single-1")["episode_id"]
    close(client, episode_id)
    close(client, episode_id)  # closing twice is fine
    err = expect_error(client.post(f"/v1/episodes/{episode_id}/step", json={"action": "x"}), 409,
                       "episode_finished")
    assert episode_id in err["message"]
    assert state(client, episode_id)["status"] == "finished"
    healthy(server, client, witness)


# --- too large --------------------------------------------------------------------------------------
def test_action_over_max_action_chars_is_413(
    server: Server, client: httpx.Client, witness: str, episode: str
) -> None:
    url = f"/v1/episodes/{episode}/step"
    err = expect_error(client.post(url, json={"action": "x" * (MAX_ACTION_CHARS + 1)}), 413, "payload_too_large")
    assert "max_action_chars" in err["message"]
    big_call = call("find_manufacturer", product="y" * MAX_ACTION_CHARS)
    expect_error(client.post(url, json={"action": openai_message(big_call)}), 413, "payload_too_large")
    expect_error(client.post(url, json={"action": tags(big_call)}), 413, "payload_too_large")
    assert state(client, episode)["turn"] == 0, "a refused action must not act"
    result = step(client, episode, tags(call("find_manufacturer", product="Halcyon drone")))
    assert result["reward"] == 1.0
    healthy(server, client, witness)


def test_body_over_max_request_bytes_is_413(
    server: Server, client: httpx.Client, witness: str, episode: str
) -> None:
    url = f"/v1/episodes/{episode}/step"
    body = json.dumps({"action": "z" * (MAX_REQUEST_BYTES + 10)}).encode()
    # With a Content-Length ...
    err = expect_error(client.post(url, content=body, headers=JSON), 413, "payload_too_large")
    assert "max_request_bytes" in err["message"]
    # ... and streamed without one (chunked), on a JSON route and on the tasks upload.
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    err = expect_error(client.post(url, content=chunks(), headers=JSON), 413, "payload_too_large")
    assert "max_request_bytes" in err["message"]
    expect_error(client.post("/v1/episodes", content=chunks(), headers=JSON), 413, "payload_too_large")
    expect_error(client.post(TASKS_URL, content=chunks(), headers={"content-type": "application/x-ndjson"}),
                 413, "payload_too_large")
    assert state(client, episode)["turn"] == 0
    result = step(client, episode, tags(call("find_manufacturer", product="Halcyon drone")))
    assert result["reward"] == 1.0
    healthy(server, client, witness)


# --- bad tool calls: data, not errors ------------------------------------------------------------------
def test_call_to_a_missing_tool_is_a_tool_error(
    server: Server, client: httpx.Client, witness: str, episode: str
) -> None:
    result = step(client, episode, tags(call("launch_rockets", count=3)))
    text = tool_message(result)
    assert text.startswith(ERROR_PREFIX.format(name="launch_rockets")), text
    assert result["reward"] == 0.0 and result["info"]["status"] == "ok"
    assert result["info"]["reward_components"]["calls"] == 1, "a call to a missing tool still counts"
    assert not result["terminated"]
    follow = step(client, episode, tags(call("find_manufacturer", product="Halcyon drone")))
    assert tool_message(follow) == "Brightwell Dynamics" and follow["reward"] == 1.0
    healthy(server, client, witness)


@pytest.mark.parametrize(("arguments", "fragment"), [
    ({"product": 12345}, "product not found"),
    ({"product": ["Halcyon drone"]}, "product not found"),
    ({"item": "Halcyon drone"}, "unexpected keyword argument"),
    ({}, "missing 1 required positional argument"),
])
def test_wrong_arguments_are_a_tool_error(
    server: Server, client: httpx.Client, witness: str, episode: str, arguments: dict[str, Any], fragment: str
) -> None:
    result = step(client, episode, tags({"name": "find_manufacturer", "arguments": arguments}))
    text = tool_message(result)
    assert text.startswith(ERROR_PREFIX.format(name="find_manufacturer")) and fragment in text, text
    assert result["reward"] == 0.0
    follow = step(client, episode, tags(call("find_manufacturer", product="Halcyon drone")))
    assert tool_message(follow) == "Brightwell Dynamics" and follow["reward"] == 1.0
    healthy(server, client, witness)


def test_type_checked_tool_rejects_wrong_type(server: Server, client: httpx.Client, witness: str) -> None:
    episode_id = reset(client, "tu-single-2", tool_timeout_s=1)["episode_id"]
    result = step(client, episode_id, tags(call("convert_currency", amount="lots", source="ZEL", target="KAV")))
    assert tool_message(result) == ERROR_PREFIX.format(name="convert_currency") + "amount must be a number"
    follow = step(client, episode_id, tags(call("convert_currency", amount=250, source="ZEL", target="KAV")))
    assert tool_message(follow) == "100.00 KAV" and follow["reward"] == 1.0
    close(client, episode_id)
    healthy(server, client, witness)
