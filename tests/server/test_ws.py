"""The WebSocket session ``/v1/ws`` against a live server on loopback (process backend): every
op, answers in completion order, an idempotent retry after a dropped socket, bad frames, keys,
and episodes shared with HTTP. Frames are written by hand here (the ``websockets`` client), so
these tests check the wire contract, not our client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from server_kit import ENV as TOOLUSE
from server_kit import call, expect_error, register, tags, tooluse_record
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

Server = Callable[..., Any]
FUNCTIONCALL = "toolgym/FunctionCall-v0"
FC_TASK = "fc-weather-001"
CITIES = ("Paris", "Tokyo", "Lima", "Nairobi", "Oslo", "Toronto", "Seoul", "Cairo")
"""The values ``FC_TASK``'s one slot (the city) takes in its question."""


def fc_gold(observation: dict[str, Any]) -> str:
    """The gold call of ``FC_TASK`` for the city its reset asked about."""
    question = next(m["content"] for m in observation["messages"] if m["role"] == "user")
    city = next(c for c in CITIES if c in question)
    return f'<tool_call>\n{json.dumps({"name": "get_weather", "arguments": {"city": city}})}\n</tool_call>'


SLOW_TOOL = "def slow(seconds):\n    import time\n    time.sleep(float(seconds))\n    return 'slept'\n"


def ws_url(server: Any) -> str:
    return server.base_url.replace("http://", "ws://") + "/v1/ws"


def http_client(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=60)


def open_ws(server: Any, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(ws_url(server), additional_headers=headers, compression=None, max_size=None)


async def ask(ws: ClientConnection, frame: dict[str, Any] | list[Any] | str) -> dict[str, Any]:
    """Send one frame (a string as it is) and read one answer (only for sockets with nothing
    else in flight)."""
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 30)))


def slow_task(server: Any) -> str:
    with http_client(server) as http:
        [task_id] = register(http, tooluse_record({"slow": SLOW_TOOL}, params={"slow": {"seconds": "number"}}))
    return task_id


async def test_reset_step_get_close(process_server: Any) -> None:
    async with open_ws(process_server) as ws:
        reset = await ask(ws, {"id": "r1", "op": "reset", "body": {"env_id": FUNCTIONCALL, "task_id": FC_TASK}})
        assert reset["id"] == "r1" and reset["status"] == 201, reset
        episode_id = reset["body"]["episode_id"]
        assert reset["body"]["observation"]["tools"]
        gold = fc_gold(reset["body"]["observation"])
        step = await ask(ws, {"id": 2, "op": "step", "episode_id": episode_id, "body": {"action": gold}})
        assert step["id"] == 2 and step["status"] == 200, step
        assert (step["body"]["reward"], step["body"]["terminated"]) == (1.0, True)
        got = await ask(ws, {"id": 3, "op": "get", "episode_id": episode_id})
        assert got["status"] == 200 and got["body"]["turn"] == 1 and got["body"]["total_reward"] == 1.0
        closed = await ask(ws, {"id": 4, "op": "close", "episode_id": episode_id})
        assert closed == {"id": 4, "status": 204, "body": None}
        # Errors are the HTTP route's, status and body.
        again = await ask(ws, {"id": 5, "op": "step", "episode_id": episode_id, "body": {"action": gold}})
        with http_client(process_server) as http:
            over_http = http.post(f"/v1/episodes/{episode_id}/step", json={"action": gold})
        assert (again["status"], again["body"]) == (over_http.status_code, over_http.json())
        assert again["body"]["error"]["code"] == "episode_finished"
        missing = await ask(ws, {"id": 6, "op": "get", "episode_id": "ep-000000-nothing"})
        assert missing["status"] == 404 and missing["body"]["error"]["code"] == "episode_not_found"


async def test_answers_in_completion_order(process_server: Any) -> None:
    slow = slow_task(process_server)
    async with open_ws(process_server) as ws:
        a = await ask(ws, {"id": "a", "op": "reset", "body": {"env_id": TOOLUSE, "task_id": slow}})
        b = await ask(ws, {"id": "b", "op": "reset", "body": {"env_id": FUNCTIONCALL, "task_id": FC_TASK}})
        slow_ep, fast_ep = a["body"]["episode_id"], b["body"]["episode_id"]
        await ws.send(json.dumps({"id": "slow", "op": "step", "episode_id": slow_ep,
                                  "body": {"action": tags(call("slow", seconds=1.5))}}))
        await ws.send(json.dumps({"id": "fast", "op": "step", "episode_id": fast_ep,
                                  "body": {"action": fc_gold(b["body"]["observation"])}}))
        await ws.send(json.dumps({"id": "get", "op": "get", "episode_id": fast_ep}))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(3)]
        assert [x["id"] for x in answers][-1] == "slow", answers
        assert {x["id"] for x in answers[:2]} == {"fast", "get"}
        assert answers[-1]["status"] == 200 and "slept" in answers[-1]["body"]["observation"]["messages"][0]["content"]
        # Two steps on one episode, sent back to back, are serialized: turns 1 and 2, in order.
        await ws.send(json.dumps({"id": 10, "op": "step", "episode_id": slow_ep,
                                  "body": {"action": tags(call("slow", seconds=0.3))}}))
        await ws.send(json.dumps({"id": 11, "op": "step", "episode_id": slow_ep,
                                  "body": {"action": tags(call("echo", text="second"))}}))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(2)]
        assert [x["id"] for x in answers] == [10, 11] and all(x["status"] == 200 for x in answers)
        got = await ask(ws, {"id": 12, "op": "get", "episode_id": slow_ep})
        assert [s["turn"] for s in got["body"]["steps"]] == [0, 1, 2]
        assert "second" in json.dumps(got["body"]["steps"][2])


async def test_idempotent_retry_after_a_dropped_socket(process_server: Any) -> None:
    slow = slow_task(process_server)
    key = f"k-{uuid.uuid4().hex}"
    async with open_ws(process_server) as ws:
        reset = await ask(ws, {"id": 1, "op": "reset", "body": {"env_id": TOOLUSE, "task_id": slow},
                               "idempotency_key": f"r-{key}"})
        episode_id = reset["body"]["episode_id"]
        action = {"action": tags(call("slow", seconds=1.0))}
        await ws.send(json.dumps({"id": 2, "op": "step", "episode_id": episode_id, "body": action,
                                  "idempotency_key": key}))
        await asyncio.sleep(0.2)  # the step is running in the sandbox when the socket goes
    # A dropped socket ends nothing: the episode is still live, over HTTP too.
    with http_client(process_server) as http:
        assert http.get(f"/v1/episodes/{episode_id}").json()["status"] == "live"
    async with open_ws(process_server) as ws:
        again = await ask(ws, {"id": 3, "op": "step", "episode_id": episode_id, "body": action,
                               "idempotency_key": key})
        assert again["status"] == 200 and "slept" in again["body"]["observation"]["messages"][0]["content"]
        same_reset = await ask(ws, {"id": 4, "op": "reset", "body": {"env_id": TOOLUSE, "task_id": slow},
                                    "idempotency_key": f"r-{key}"})
        assert same_reset["body"]["episode_id"] == episode_id
        state = await ask(ws, {"id": 5, "op": "get", "episode_id": episode_id})
        assert state["body"]["turn"] == 1, state  # acted once, answered twice
        assert len(state["body"]["steps"]) == 1


async def test_bad_frames_are_answered_and_the_socket_stays_open(process_server: Any) -> None:
    async with open_ws(process_server) as ws:
        bad_json = await ask(ws, "{not json")
        assert bad_json["id"] is None and bad_json["status"] == 400
        assert bad_json["body"]["error"]["code"] == "bad_request"
        await ws.send(b'{"id": 1, "op": "get", "episode_id": "\xff"}')  # binary, not UTF-8
        assert json.loads(await ws.recv())["status"] == 400
        unknown_op = await ask(ws, {"id": 7, "op": "explode"})
        assert unknown_op["id"] == 7 and unknown_op["status"] == 422
        assert unknown_op["body"]["error"]["code"] == "validation_failed"
        assert unknown_op["body"]["error"]["message"].startswith("op:")
        extra = await ask(ws, {"id": 8, "op": "get", "episode_id": "x", "surprise": 1})
        assert extra["status"] == 422 and "surprise" in extra["body"]["error"]["message"]
        no_episode = await ask(ws, {"id": 9, "op": "step", "body": {"action": "hi"}})
        assert no_episode["status"] == 422 and no_episode["body"]["error"]["message"].startswith("episode_id:")
        no_body = await ask(ws, {"id": 10, "op": "reset"})
        assert no_body["status"] == 422 and no_body["body"]["error"]["message"].startswith("body:")
        not_an_object = await ask(ws, [1, 2])
        assert not_an_object["status"] == 422 and not_an_object["id"] is None
        # The body is checked by the HTTP route's model, with the HTTP route's words.
        bad_body = await ask(ws, {"id": 11, "op": "reset", "body": {"env_id": FUNCTIONCALL, "seed": -1}})
        with http_client(process_server) as http:
            over_http = http.post("/v1/episodes", json={"env_id": FUNCTIONCALL, "seed": -1})
        assert (bad_body["status"], bad_body["body"]["error"]["message"]) == (
            over_http.status_code, over_http.json()["error"]["message"])
        bad_step = await ask(ws, {"id": 12, "op": "step", "episode_id": "x", "body": {"act": "typo"}})
        assert bad_step["status"] == 422 and bad_step["body"]["error"]["message"].startswith("action:")
        unknown_env = await ask(ws, {"id": 13, "op": "reset", "body": {"env_id": "toolgym/FunctionCall"}})
        assert unknown_env["status"] == 404 and unknown_env["body"]["error"]["details"]["suggestion"] == FUNCTIONCALL
        # Still open and serving.
        ok = await ask(ws, {"id": 14, "op": "reset", "body": {"env_id": FUNCTIONCALL}})
        assert ok["status"] == 201
        await ask(ws, {"id": 15, "op": "close", "episode_id": ok["body"]["episode_id"]})


async def test_oversized_frame_is_413(server_factory: Server) -> None:
    server = server_factory("process", max_request_bytes=4096)
    async with open_ws(server) as ws:
        big = await ask(ws, {"id": 1, "op": "step", "episode_id": "x", "body": {"action": "y" * 5000}})
        assert big["status"] == 413 and big["body"]["error"]["code"] == "payload_too_large"
        assert (await ask(ws, {"id": 2, "op": "get", "episode_id": "x"}))["status"] == 404


async def test_wrong_or_missing_key_is_refused(server_factory: Server) -> None:
    server = server_factory("process", api_keys=("key-alpha", "key-beta"))
    for key in ("key-wrong", None):
        with pytest.raises(InvalidStatus) as refused:
            async with open_ws(server, key):
                pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"
    async with open_ws(server, "key-alpha") as alpha, open_ws(server, "key-beta") as beta:
        reset = await ask(alpha, {"id": 1, "op": "reset", "body": {"env_id": FUNCTIONCALL}})
        assert reset["status"] == 201
        # Another key's episode does not exist for it, as over HTTP.
        other = await ask(beta, {"id": 1, "op": "get", "episode_id": reset["body"]["episode_id"]})
        assert other["status"] == 404
        await ask(alpha, {"id": 2, "op": "close", "episode_id": reset["body"]["episode_id"]})


async def test_episodes_are_shared_with_http(process_server: Any) -> None:
    with http_client(process_server) as http:
        made_over_http = http.post("/v1/episodes", json={"env_id": FUNCTIONCALL, "task_id": FC_TASK}).json()
        async with open_ws(process_server) as ws:
            step = await ask(ws, {"id": 1, "op": "step", "episode_id": made_over_http["episode_id"],
                                  "body": {"action": fc_gold(made_over_http["observation"]), "expected_turn": 0}})
            assert step["status"] == 200 and step["body"]["reward"] == 1.0
            made_over_ws = await ask(ws, {"id": 2, "op": "reset", "body": {"env_id": FUNCTIONCALL, "task_id": FC_TASK}})
        ws_episode = made_over_ws["body"]["episode_id"]
        # The socket is gone; its episode is not.
        r = http.post(f"/v1/episodes/{ws_episode}/step", json={"action": fc_gold(made_over_ws["body"]["observation"])})
        assert r.status_code == 200 and r.json()["reward"] == 1.0
        assert http.get(f"/v1/episodes/{made_over_http['episode_id']}").json()["turn"] == 1
        for episode_id in (ws_episode, made_over_http["episode_id"]):
            assert http.delete(f"/v1/episodes/{episode_id}").status_code == 204


def test_a_plain_get_is_told_to_upgrade(process_server: Any) -> None:
    r = httpx.get(process_server.base_url + "/v1/ws")
    error = expect_error(r, 426, "upgrade_required")
    assert "Upgrade" in error["message"]
