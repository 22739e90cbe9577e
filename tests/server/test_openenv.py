"""The OpenEnv endpoint ``/openenv/{env_name}`` against a live server on loopback (process backend).

The first test runs OpenEnv's own client (``openenv`` from PyPI, in its cached virtualenv, see
tests/venv_cache.py) on a FunctionCall and a ToolUse episode; the others write OpenEnv's HTTP requests
and WebSocket frames by hand, to check the wire contract, errors and episode ownership.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import expect_error
from venv_cache import openenv_python
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

KEY = "k-openenv"
BEARER = {"Authorization": f"Bearer {KEY}"}
PLAY = Path(__file__).with_name("openenv_play.py")
CITIES = ("Paris", "Tokyo", "Lima", "Nairobi", "Oslo", "Toronto", "Seoul", "Cairo")


@pytest.fixture
def server(server_factory: Any) -> Any:
    return server_factory("process", api_keys=(KEY,))


def http(server: Any, headers: dict[str, str] | None = BEARER) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=headers or {}, timeout=60)


def open_ws(server: Any, env: str = "ToolUse-v0", headers: dict[str, str] | None = BEARER) -> Any:
    url = server.base_url.replace("http://", "ws://") + f"/openenv/{env}/ws"
    return connect(url, additional_headers=headers or {}, compression=None, max_size=None)


async def ask(ws: ClientConnection, frame: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 30)))


def wait_closed(client: httpx.Client, episode_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The episode's state once it has ended with reason ``closed`` (a socket's end closes it soon after)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = client.get(f"/v1/episodes/{episode_id}").json()
        if state["status"] != "live":
            assert state["reason"] == "closed", state
            return dict(state)
        assert time.monotonic() < deadline, f"{episode_id} still live after {timeout_s} s"
        time.sleep(0.05)


def fc_gold(observation: dict[str, Any]) -> str:
    question = next(m["content"] for m in observation["messages"] if m["role"] == "user")
    city = next(c for c in CITIES if c in question)
    return f'<tool_call>\n{json.dumps({"name": "get_weather", "arguments": {"city": city}})}\n</tool_call>'


def test_openenv_client_plays_functioncall_and_tooluse(server: Any) -> None:
    python = openenv_python()
    done = subprocess.run([str(python), str(PLAY), server.base_url, KEY], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)

    fc = report["functioncall"]
    assert (fc["reset"]["reward"], fc["reset"]["done"]) == (None, False)
    assert fc["reset"]["observation"]["tools"] and fc["reset"]["observation"]["messages"]
    episode_id = fc["reset"]["metadata"]["episode_id"]
    assert (fc["step"]["reward"], fc["step"]["done"]) == (1.0, True)
    assert fc["step"]["metadata"]["terminated"] is True and fc["step"]["metadata"]["truncated"] is False
    assert fc["step"]["metadata"]["reason"] == "answered" and fc["step"]["metadata"]["episode_id"] == episode_id
    assert fc["step"]["observation"]["metadata"] == fc["step"]["metadata"]
    assert fc["state"] | {"options": None} == {
        "episode_id": episode_id, "step_count": 1, "env_id": "toolgym/FunctionCall-v0", "task_id": "fc-weather-001",
        "split": "train", "seed": 3, "options": None, "status": "finished", "reason": "answered", "total_reward": 1.0,
    }
    assert "has ended" in fc["after_done"] and fc["after_done"].startswith("RuntimeError")
    assert "VALIDATION_ERROR" in fc["bad_action"] and "data.text" in fc["bad_action"]

    tu = report["tooluse"]
    assert tu["before"]["episode_id"] is None and tu["before"]["step_count"] == 0
    assert (tu["reset"]["reward"], tu["reset"]["done"]) == (None, False)
    [tool] = tu["first"]["observation"]["messages"]
    assert tool["role"] == "tool" and json.loads(tool["content"])["population"] == 48210
    assert (tu["first"]["reward"], tu["first"]["done"]) == (1.0, False)
    assert (tu["final"]["reward"], tu["final"]["done"]) == (1.0, True)
    assert tu["final"]["metadata"]["answer_correct"] is True
    assert (tu["state"]["step_count"], tu["state"]["total_reward"], tu["state"]["status"]) == (2, 2.0, "finished")

    assert "HTTP 401" in report["wrong_key"], report["wrong_key"]
    with http(server) as client:  # the session's close ended its episode; it stays readable
        assert wait_closed(client, report["left_open"])["turn"] == 0


def test_http_routes(server: Any) -> None:
    with http(server, headers=None) as anonymous:
        assert anonymous.get("/openenv/ToolUse-v0/health").json() == {"status": "healthy"}
        expect_error(anonymous.get("/openenv/NoSuch-v0/health"), 404, "env_not_found")
        expect_error(anonymous.post("/openenv/ToolUse-v0/reset", json={}), 401, "unauthorized")
        expect_error(anonymous.get("/openenv/ToolUse-v0/schema"), 401, "unauthorized")
    with http(server) as client:
        schema = client.get("/openenv/ToolUse-v0/schema").json()
        assert set(schema) == {"action", "observation", "state"}
        assert {"message", "content", "tool_calls"} <= set(schema["action"]["properties"])
        assert client.get("/openenv/FunctionCall-v0/metadata").json()["name"] == "toolgym/FunctionCall-v0"
        assert client.get("/openenv/ToolUse-v0/ws").status_code == 426

        # The full id works as the name; the episode is named in steps and state (HTTP has no session).
        reset = client.post("/openenv/toolgym/FunctionCall-v0/reset", json={"task_id": "fc-weather-001"}).json()
        assert (reset["reward"], reset["done"]) == (None, False)
        episode_id = reset["metadata"]["episode_id"]
        step = client.post("/openenv/FunctionCall-v0/step",
                           json={"episode_id": episode_id, "action": {"message": fc_gold(reset["observation"])}})
        assert step.status_code == 200, step.text
        assert (step.json()["reward"], step.json()["done"]) == (1.0, True), step.json()
        state = client.get("/openenv/FunctionCall-v0/state", params={"episode_id": episode_id}).json()
        assert (state["step_count"], state["status"]) == (1, "finished")

        drawn = client.post("/openenv/ToolUse-v0/reset")  # no body at all: a drawn task, as OpenEnv's reset()
        assert drawn.status_code == 200 and drawn.json()["done"] is False, drawn.text
        assert client.delete(f"/v1/episodes/{drawn.json()['metadata']['episode_id']}").status_code == 204
        reset = client.post("/openenv/ToolUse-v0/reset", json={"task_id": "tu-single-1"}).json()
        episode_id = reset["metadata"]["episode_id"]
        both = {"message": "x", "content": "y"}
        bad = client.post("/openenv/ToolUse-v0/step", json={"episode_id": episode_id, "action": both})
        assert "not both" in expect_error(bad, 422, "validation_failed")["message"]
        empty = client.post("/openenv/ToolUse-v0/step", json={"episode_id": episode_id, "action": {}})
        expect_error(empty, 422, "validation_failed")
        expect_error(client.post("/openenv/ToolUse-v0/step", json={"action": {"message": "x"}}), 422,
                     "validation_failed")
        expect_error(client.post("/openenv/ToolUse-v0/reset", json={"episode_id": "mine"}), 422, "validation_failed")
        expect_error(client.post("/openenv/ToolUse-v0/reset", json={"seed": -1}), 422, "validation_failed")
        expect_error(client.get("/openenv/ToolUse-v0/state", params={"episode_id": "ep-none"}), 404,
                     "episode_not_found")
        answer = client.post("/openenv/ToolUse-v0/step", json={"episode_id": episode_id, "action": {
            "content": "The answer is 48210.", "metadata": {"ignored": True}}}).json()
        assert (answer["reward"], answer["done"]) == (0.5, True)  # FTRL: 1 / (1 + 1 gold left unsolved)


async def test_socket_frames_errors_and_episode_ownership(server: Any) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(server, env="NoSuch-v0"):
            pass
    assert refused.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(server, headers=None):
            pass
    assert refused.value.response.status_code == 401

    async with open_ws(server) as ws:
        bad_json = await ask(ws, "{not json")
        assert bad_json["type"] == "error" and bad_json["data"]["code"] == "INVALID_JSON"
        unknown = await ask(ws, {"type": "mcp", "data": {}})
        assert unknown["data"]["code"] == "UNKNOWN_TYPE" and unknown["data"]["status"] == 422
        early = await ask(ws, {"type": "step", "data": {"message": "hi"}})
        assert (early["data"]["code"], early["data"]["status"]) == ("EXECUTION_ERROR", 409)
        assert early["data"]["error"]["code"] == "conflict"
        first = await ask(ws, {"type": "reset", "data": {"task_id": "tu-single-1"}})
        assert first["type"] == "observation" and first["data"]["done"] is False
        second = await ask(ws, {"type": "reset", "data": {}})
        state = await ask(ws, {"type": "state"})
        assert state == {"type": "state", "data": {**state["data"], "step_count": 0,
                                                   "episode_id": second["data"]["metadata"]["episode_id"]}}
    with http(server) as client:
        wait_closed(client, first["data"]["metadata"]["episode_id"])  # a new reset closed the old one
        wait_closed(client, second["data"]["metadata"]["episode_id"])  # the dropped socket closed its own
