"""The per-episode MCP endpoint ``/v1/episodes/{id}/mcp`` against a live server (process backend).

The first tests drive it with the ``mcp`` SDK's own client (``mcp.client.streamable_http``) on the
three env families and check that the steps' rewards are the episode's (``GET /v1/episodes/{id}``);
one runs the example of docs/mcp.md as written; the others write the JSON-RPC by hand for the wire
contract: errors and their HTTP codes, sessions, SSE, notifications, the Origin guard.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

KEY, OTHER = "k-mcp", "k-mcp-other"
BEARER = {"Authorization": f"Bearer {KEY}"}
ACCEPT = {"Accept": "application/json, text/event-stream"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"
CITIES = ("Paris", "Tokyo", "Lima", "Nairobi", "Oslo", "Toronto", "Seoul", "Cairo")


@pytest.fixture(scope="module")
def server(farm: Any) -> Any:
    return farm.start(backend="process", api_keys=(KEY, OTHER))


@pytest.fixture
def api(server: Any) -> Any:
    with httpx.Client(base_url=server.base_url, headers=BEARER, timeout=60) as client:
        yield client


def reset(api: httpx.Client, env_id: str, task_id: str) -> dict[str, Any]:
    r = api.post("/v1/episodes", json={"env_id": env_id, "task_id": task_id})
    assert r.status_code == 201, r.text
    return dict(r.json())


@asynccontextmanager
async def mcp_session(server: Any, episode_id: str, key: str = KEY) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        url = f"{server.base_url}/v1/episodes/{episode_id}/mcp"
        async with streamable_http_client(url, http_client=http) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            yield s


def rpc(server: Any, episode_id: str, method: str, params: dict[str, Any] | None = None, *,
        headers: dict[str, str] | None = None, request_id: int | None = 1) -> httpx.Response:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if request_id is not None:
        message["id"] = request_id
    return httpx.post(f"{server.base_url}/v1/episodes/{episode_id}/mcp", json=message, timeout=60,
                      headers={**BEARER, **ACCEPT, **(headers or {})})


async def test_the_sdk_client_calls_tooluse_tools_and_the_rewards_are_the_episodes(server: Any, api: Any) -> None:
    episode_id = reset(api, "toolgym/ToolUse-v0", "tu-single-1")["episode_id"]
    async with mcp_session(server, episode_id) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"get_city_info", "get_stock_price"} <= set(tools), tools
        assert tools["get_city_info"].input_schema["type"] == "object"
        assert "city" in tools["get_city_info"].input_schema["properties"]

        hit = await session.call_tool("get_city_info", {"city": "Varnholt"})
        assert not hit.is_error
        assert json.loads(hit.content[0].text) == {"population": 48210, "country": "Eskara", "founded": 1184}
        assert hit.structured_content["reward"] > 0 and hit.structured_content["status"] == "ok"
        assert hit.meta["toolgym/step"]["reward"] == hit.structured_content["reward"]

        miss = await session.call_tool("get_city_info", {"town": "Varnholt"})  # a wrong argument name
        assert miss.is_error, miss
        assert miss.content[0].text.startswith("an error occured when call get_city_info")

        with pytest.raises(MCPError, match="unknown tool"):
            await session.call_tool("no_such_tool", {})

    state = api.get(f"/v1/episodes/{episode_id}").json()
    assert state["turn"] == 2 and state["status"] == "live"
    assert state["total_reward"] == pytest.approx(hit.structured_content["reward"] + miss.structured_content["reward"])
    assert state["steps"][0]["action"]["tool_calls"][0]["function"]["name"] == "get_city_info"


async def test_functioncall_answers_once_and_then_reports_the_end(server: Any, api: Any) -> None:
    first = reset(api, "toolgym/FunctionCall-v0", "fc-weather-001")
    question = next(m["content"] for m in first["observation"]["messages"] if m["role"] == "user")
    city = next(c for c in CITIES if c in question)
    episode_id = first["episode_id"]
    async with mcp_session(server, episode_id) as session:
        assert "get_weather" in [t.name for t in (await session.list_tools()).tools]
        answer = await session.call_tool("get_weather", {"city": city})
        assert not answer.is_error
        assert answer.structured_content["reward"] == 1.0 and answer.structured_content["terminated"] is True
        again = await session.call_tool("get_weather", {"city": city})
        assert again.is_error and "ended" in again.content[0].text
    state = api.get(f"/v1/episodes/{episode_id}").json()
    assert (state["status"], state["reason"], state["total_reward"], state["turn"]) == ("finished", "answered", 1.0, 1)


async def test_codemath_gets_a_python_tool(server: Any, api: Any) -> None:
    r = api.post("/v1/envs/toolgym/CodeMath-v0/tasks",
                 json={"tasks": [{"id": "cm-mcp-1", "question": "What is 6 times 7?", "answer": "42"}]})
    assert r.status_code in (200, 201), r.text
    episode_id = reset(api, "toolgym/CodeMath-v0", "cm-mcp-1")["episode_id"]
    async with mcp_session(server, episode_id) as session:
        assert [t.name for t in (await session.list_tools()).tools] == ["python"]
        work = await session.call_tool("python", {"code": "print(6 * 7)"})
        assert "Code execution result: 42" in work.content[0].text and not work.is_error
        done = await session.call_tool("python", {"code": "print('\\\\boxed{42}')"})
        assert done.structured_content["reward"] == 1.0 and done.structured_content["reason"] == "answered"
    state = api.get(f"/v1/episodes/{episode_id}").json()
    assert (state["turn"], state["total_reward"], state["status"]) == (2, 1.0, "finished")


def test_the_docs_example_runs_as_written(server: Any) -> None:
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert code is not None
    env = {**os.environ, "TOOLGYM_BASE_URL": server.base_url, "TOOLGYM_API_KEY": KEY}
    done = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=120,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tools: [" in done.stdout and "get_city_info" in done.stdout
    assert '"population": 48210' in done.stdout and "error: False" in done.stdout
    assert re.search(r"turn: 1 total_reward: [0-9.]+", done.stdout), done.stdout


def test_errors_carry_the_right_http_status(server: Any, api: Any) -> None:
    unknown = rpc(server, "ep-nope", "tools/list")
    assert unknown.status_code == 404
    body = unknown.json()
    assert body["id"] == 1 and body["error"]["data"]["error"]["code"] == "episode_not_found"
    assert body["error"]["data"]["status"] == 404

    episode_id = reset(api, "toolgym/ToolUse-v0", "tu-single-1")["episode_id"]
    theirs = rpc(server, episode_id, "initialize", {"protocolVersion": "2025-06-18"},
                 headers={"Authorization": f"Bearer {OTHER}"})
    assert theirs.status_code == 404 and "Mcp-Session-Id" not in theirs.headers
    assert theirs.json()["error"]["data"]["error"]["code"] == "episode_not_found"

    no_key = httpx.post(f"{server.base_url}/v1/episodes/{episode_id}/mcp", headers=ACCEPT, timeout=30,
                        json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert no_key.status_code == 401
    cookie_only = httpx.post(f"{server.base_url}/v1/episodes/{episode_id}/mcp", headers=ACCEPT, timeout=30,
                             cookies={"toolgym_key": KEY}, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert cookie_only.status_code == 401, "a cookie never authenticates a POST"

    bad_params = rpc(server, episode_id, "tools/call", {"name": "get_city_info", "arguments": "Varnholt"})
    assert bad_params.status_code == 422 and bad_params.json()["error"]["code"] == -32602
    bad_meta = rpc(server, episode_id, "tools/call", {"name": "get_city_info", "arguments": {}, "_meta": [1]})
    assert bad_meta.status_code == 422 and bad_meta.json()["error"]["code"] == -32602
    method = rpc(server, episode_id, "resources/list")
    assert method.status_code == 404 and method.json()["error"]["code"] == -32601
    ahead = rpc(server, episode_id, "tools/call", {"name": "get_city_info", "arguments": {"city": "Varnholt"},
                                                   "_meta": {"toolgym/expected_turn": 5}})
    assert ahead.status_code == 409 and ahead.json()["error"]["data"]["error"]["code"] == "turn_mismatch"
    not_json = httpx.post(f"{server.base_url}/v1/episodes/{episode_id}/mcp", content=b"{nope", timeout=30,
                          headers={**BEARER, **ACCEPT, "Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == -32700
    assert httpx.get(f"{server.base_url}/v1/episodes/{episode_id}/mcp", headers=BEARER).status_code == 405
    foreign = rpc(server, episode_id, "ping", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    own = server.base_url.replace("http://", "")
    assert rpc(server, episode_id, "ping", headers={"Origin": f"http://{own}"}).status_code == 200
    future = rpc(server, episode_id, "ping", headers={"MCP-Protocol-Version": "1999-01-01"})
    assert future.status_code == 400 and "2025-11-25" in future.json()["error"]["message"]
    assert api.get(f"/v1/episodes/{episode_id}").json()["turn"] == 0, "no failed request played a step"


def test_sessions_sse_notifications_and_idempotency(server: Any, api: Any) -> None:
    episode_id = reset(api, "toolgym/ToolUse-v0", "tu-single-1")["episode_id"]
    init = rpc(server, episode_id, "initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                                                  "clientInfo": {"name": "t", "version": "0"}})
    assert init.status_code == 200 and init.json()["result"]["protocolVersion"] == "2025-03-26"
    session = {"Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    assert rpc(server, episode_id, "notifications/initialized", headers=session, request_id=None).status_code == 202

    sse = rpc(server, episode_id, "ping", headers={**session, "Accept": "text/event-stream"})
    assert sse.headers["content-type"].startswith("text/event-stream")
    data = next(line for line in sse.text.splitlines() if line.startswith("data: "))
    assert json.loads(data[6:]) == {"jsonrpc": "2.0", "id": 1, "result": {}}

    call = {"name": "get_city_info", "arguments": {"city": "Varnholt"}, "_meta": {"toolgym/idempotency_key": "c-1"}}
    first, second = (rpc(server, episode_id, "tools/call", call, headers=session) for _ in range(2))
    assert first.json()["result"] == second.json()["result"]
    assert api.get(f"/v1/episodes/{episode_id}").json()["turn"] == 1, "the retried call was not played twice"

    url = f"{server.base_url}/v1/episodes/{episode_id}/mcp"
    assert httpx.delete(url, headers={**BEARER, **session}).status_code == 204
    gone = rpc(server, episode_id, "ping", headers=session)
    assert gone.status_code == 404, "an ended session is a 404, so the client opens a new one"
    assert api.get(f"/v1/episodes/{episode_id}").json()["status"] == "live", "ending a session ends no episode"
