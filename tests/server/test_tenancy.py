"""Keys and limits over real HTTP and WebSocket (process backend, loopback): the per-key live
episode quota (429), the live-episode limit (503), the body cap (413), the per-key request rate
(429 ``rate_limited``), media types (415), another key's episodes (404), requests in flight
(503 ``overloaded``), and keys kept out of logs and reprs. Key rotation through a real
``toolgym serve`` is in test_key_rotation.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from server_kit import (
    ENV,
    TASKS_URL,
    Server,
    ServerFarm,
    call,
    expect_error,
    register,
    reset,
    tags,
    tooluse_record,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from toolgym.client import EnvClient, RetryPolicy
from toolgym.errors import RateLimited
from toolgym.server import Settings

KEY_A, KEY_B, KEY_C = "tenancy-key-alpha-7f3a", "tenancy-key-bravo-91c2", "tenancy-key-charlie-5d0e"
FUNCTIONCALL = "toolgym/FunctionCall-v0"
JSON = {"content-type": "application/json"}


def ws_connect(server: Server, key: str) -> Any:
    url = server.base_url.replace("http://", "ws://") + "/v1/ws"
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"}, compression=None, max_size=None)


async def ask(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 30)))


# --- the per-key quota and the live-episode limit ------------------------------------------------------
@pytest.fixture(scope="module")
def quota_server(farm: ServerFarm) -> Server:
    return farm.start("process", api_keys=(KEY_A, KEY_B, KEY_C), max_live_episodes=2,
                      max_live_episodes_per_key=1, warm_pool_size=0)


def test_per_key_quota_is_429_with_retry_after_and_spares_other_keys(quota_server: Server) -> None:
    with quota_server.client(KEY_A, timeout=20) as a, quota_server.client(KEY_B, timeout=20) as b:
        mine = reset(a, "tu-single-1")["episode_id"]
        started = time.monotonic()
        r = a.post("/v1/episodes", json={"env_id": ENV, "task_id": "tu-single-1"})
        err = expect_error(r, 429, "quota_exceeded")
        assert time.monotonic() - started < 5, "a refusal is immediate"
        assert int(r.headers["Retry-After"]) >= 1
        assert err["retryable"] is False and "max_live_episodes_per_key" in err["message"]
        theirs = reset(b, "tu-single-1")["episode_id"]  # another key is not held back by mine
        # Both slots of the server are taken now: a third key meets the server's limit, a 503.
        with quota_server.client(KEY_C, timeout=20) as c:
            started = time.monotonic()
            r = c.post("/v1/episodes", json={"env_id": ENV, "task_id": "tu-single-1"})
            err = expect_error(r, 503, "at_capacity")
            assert time.monotonic() - started < 5, "overload is refused at once, never a hang"
            assert int(r.headers["Retry-After"]) >= 1 and err["retryable"] is True
        assert a.delete(f"/v1/episodes/{mine}").status_code == 204
        again = reset(a, "tu-single-1")["episode_id"]
        for client, episode_id in ((a, again), (b, theirs)):
            assert client.delete(f"/v1/episodes/{episode_id}").status_code == 204


# --- another key's episode ----------------------------------------------------------------------------
def test_another_keys_episode_is_404_over_http_and_websocket(quota_server: Server) -> None:
    with quota_server.client(KEY_A) as a, quota_server.client(KEY_B) as b:
        episode = reset(a, "tu-single-1")["episode_id"]
        action = {"action": tags(call("get_city_info", city="Varnholt"))}
        for method, url, body in [
            ("GET", f"/v1/episodes/{episode}", None),
            ("POST", f"/v1/episodes/{episode}/step", action),
            ("GET", f"/v1/episodes/{episode}/trajectory", None),
            ("POST", f"/v1/episodes/{episode}/fork", {}),
            ("DELETE", f"/v1/episodes/{episode}", None),
        ]:
            err = expect_error(b.request(method, url, json=body), 404, "episode_not_found")
            assert err["message"] == f"no episode {episode!r} for this API key"

        async def over_ws() -> list[dict[str, Any]]:
            async with ws_connect(quota_server, KEY_B) as ws:
                return [await ask(ws, {"id": i, "op": op, "episode_id": episode, **extra})
                        for i, (op, extra) in enumerate([("get", {}), ("step", {"body": action}), ("close", {})])]

        for answer in asyncio.run(over_ws()):
            assert answer["status"] == 404, answer
            assert answer["body"]["error"]["code"] == "episode_not_found"
        mine = a.get(f"/v1/episodes/{episode}").json()
        assert mine["turn"] == 0 and mine["status"] == "live", "the other key's requests did nothing"
        assert a.delete(f"/v1/episodes/{episode}").status_code == 204


# --- the body cap and media types -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_server(farm: ServerFarm) -> Server:
    return farm.start("process", api_keys=(KEY_A,), max_request_bytes=4096, warm_pool_size=0)


@pytest.fixture(scope="module")
def small(small_server: Server) -> Iterator[httpx.Client]:
    with small_server.client(KEY_A) as c:
        yield c


def test_body_over_max_request_bytes_is_413_declared_or_chunked(small: httpx.Client) -> None:
    body = json.dumps({"env_id": ENV, "task_id": "x" * 5000}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    for url in ("/v1/episodes", "/v1/episodes/ep-000000-none/step", TASKS_URL):
        err = expect_error(small.post(url, content=body, headers=JSON), 413, "payload_too_large")
        assert "max_request_bytes" in err["message"] and err["details"]["max_bytes"] == 4096
        expect_error(small.post(url, content=chunks(), headers=JSON), 413, "payload_too_large")
    assert small.get("/v1/envs").status_code == 200


async def test_frame_over_max_request_bytes_is_413_and_the_socket_stays(small_server: Server) -> None:
    async with ws_connect(small_server, KEY_A) as ws:
        big = await ask(ws, {"id": 1, "op": "reset", "body": {"env_id": ENV, "task_id": "x" * 5000}})
        assert big["status"] == 413 and big["body"]["error"]["code"] == "payload_too_large"
        assert (await ask(ws, {"id": 2, "op": "get", "episode_id": "ep-none"}))["status"] == 404


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "text/plain; charset=utf-8",
                                   "application/x-ndjson"])
def test_a_body_that_is_not_json_is_415(small: httpx.Client, ctype: str) -> None:
    body = json.dumps({"env_id": ENV, "task_id": "tu-single-1"}).encode()
    for url in ("/v1/episodes", "/v1/episodes/ep-000000-none/step", "/v1/batch/reset"):
        err = expect_error(small.post(url, content=body, headers={"content-type": ctype}), 415,
                           "unsupported_media_type")
        assert err["details"]["accepted"] == ["application/json"], err
    assert small.get("/v1/episodes").json()["episodes"] == [], "a refused request started nothing"


def test_tasks_take_json_and_jsonl_only(small: httpx.Client) -> None:
    record = tooluse_record({}, task_id="t-tenancy-jsonl")
    r = small.post(TASKS_URL, content=json.dumps(record) + "\n", headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 201, r.text
    err = expect_error(small.post(TASKS_URL, content=json.dumps(record), headers={"content-type": "text/csv"}),
                       415, "unsupported_media_type")
    assert "application/x-ndjson" in err["details"]["accepted"]
    # A body without a Content-Type: the task upload reads it as JSON, a JSON route refuses it.
    untyped = json.dumps({"tasks": [tooluse_record({}, task_id="t-tenancy-untyped")]}).encode()
    assert small.post(TASKS_URL, content=untyped).status_code == 201
    err = expect_error(small.post("/v1/episodes", content=json.dumps({"env_id": ENV}).encode()), 415,
                       "unsupported_media_type")
    assert "without a Content-Type" in err["message"]
    r = small.post("/v1/episodes", json={"env_id": ENV, "task_id": "t-tenancy-jsonl"})
    assert r.status_code == 201, r.text
    assert small.delete(f"/v1/episodes/{r.json()['episode_id']}").status_code == 204


# --- the per-key request rate --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rate_server(farm: ServerFarm) -> Server:
    return farm.start("process", api_keys=(KEY_A, KEY_B), rate_limit_per_key=2.0, warm_pool_size=0)


def drain(client: httpx.Client, url: str = "/v1/envs", limit: int = 20) -> httpx.Response:
    """Send until refused (bounded); the burst is max(1, rate) requests."""
    for _ in range(limit):
        r = client.get(url)
        if r.status_code == 429:
            return r
        assert r.status_code in (200, 404), r.text
    raise AssertionError(f"no 429 after {limit} requests")


def test_rate_limit_is_429_with_retry_after_per_key(rate_server: Server) -> None:
    with rate_server.client(KEY_A) as a, rate_server.client(KEY_B) as b:
        time.sleep(1.1)  # a full bucket
        passed = 0
        while True:
            r = a.get("/v1/envs")
            if r.status_code != 200:
                break
            passed += 1
            assert passed <= 30, "the bucket refills only at 2 tokens/s"
        assert passed >= 2, "the burst is one second's worth (2 requests)"
        err = expect_error(r, 429, "rate_limited")
        assert err["retryable"] is True and "rate_limit_per_key" in err["message"]
        wait = err["details"]["retry_after_s"]
        assert 0 < wait <= 0.5 and r.headers["Retry-After"] == "1"
        assert b.get("/v1/envs").status_code == 200, "another key has its own bucket"
        assert a.get("/healthz").status_code == 200, "health needs no key, so takes no token"
        time.sleep(wait + 0.05)
        assert a.get("/v1/envs").status_code == 200, "a token is back after retry_after_s"
        # Every authenticated route counts, an episode route that answers 404 too.
        expect_error(drain(a, "/v1/episodes/ep-000000-none"), 429, "rate_limited")


async def test_each_websocket_frame_takes_a_token(rate_server: Server) -> None:
    await asyncio.sleep(1.1)
    async with ws_connect(rate_server, KEY_B) as ws:
        answers = [await ask(ws, {"id": i, "op": "get", "episode_id": "ep-none"}) for i in range(6)]
        limited = [a for a in answers if a["status"] == 429]
        assert limited, answers
        assert limited[0]["body"]["error"]["code"] == "rate_limited" and limited[0]["id"] >= 2
        assert limited[0]["body"]["error"]["details"]["retry_after_s"] > 0
        # A malformed frame counts too, and the socket stays open.
        await ws.send("{not json")
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["status"] in (400, 429)
        await asyncio.sleep(1.1)
        assert (await ask(ws, {"id": 99, "op": "get", "episode_id": "ep-none"}))["status"] == 404


def test_the_client_maps_rate_limited_back_and_waits_it_out(rate_server: Server) -> None:
    time.sleep(1.1)
    with EnvClient(rate_server.base_url, KEY_A, retry=RetryPolicy(max_retries=0)) as impatient:
        with pytest.raises(RateLimited) as refused:
            for _ in range(10):
                impatient.envs()
        assert refused.value.retry_after_s > 0 and refused.value.retryable
    with EnvClient(rate_server.base_url, KEY_A) as patient:
        for _ in range(5):  # over the burst: the client waits Retry-After and succeeds
            assert patient.envs()


# --- keys stay secret ------------------------------------------------------------------------------------
def test_keys_appear_in_no_log_and_no_repr(farm: ServerFarm, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(api_keys=(KEY_A, KEY_B), rate_limit_per_key=1000)
    assert KEY_A not in repr(settings) and KEY_B not in repr(settings)
    caplog.set_level(logging.DEBUG)
    server = farm.start("process", api_keys=(KEY_A, KEY_B), warm_pool_size=0)
    assert KEY_A not in repr(server.settings)
    # The authenticator holds digests and owner ids only, never a key.
    held = repr(vars(server.app.state.auth))
    assert KEY_A not in held and KEY_B not in held
    for header in (f"Bearer {KEY_A}x", f"Bearer {KEY_A[:-1]}", KEY_B, f"Basic {KEY_B}", "Bearer"):
        with httpx.Client(base_url=server.base_url, headers={"Authorization": header}) as c:
            err = expect_error(c.get("/v1/envs"), 401, "unauthorized")
            assert KEY_A[8:] not in err["message"] and KEY_B[8:] not in err["message"]
    with server.client(KEY_A) as c:
        assert c.get("/v1/envs").status_code == 200
    server.app.state.auth.reload()
    # The server's records (this process also holds the test's own httpx client).
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore", "websockets"))]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in server_side)
    assert "API keys" in logged or "toolgym" in logged, "the server logged"
    for key in (KEY_A, KEY_B):
        assert key[8:] not in logged


# --- overload: a bounded number of requests in flight -----------------------------------------------------
SLOW_TOOL = "def slow(seconds):\n    import time\n    time.sleep(float(seconds))\n    return 'slept'\n"


def test_requests_over_max_concurrent_requests_are_503_at_once(farm: ServerFarm) -> None:
    server = farm.start("process", max_concurrent_requests=2, warm_pool_size=0)
    with server.client(timeout=60) as c:
        [task] = register(c, tooluse_record({"slow": SLOW_TOOL}, params={"slow": {"seconds": "number"}}))
        episodes = [reset(c, task, tool_timeout_s=20)["episode_id"] for _ in range(2)]

        def slow_step(episode_id: str) -> int:
            with server.client(timeout=60) as mine:
                r = mine.post(f"/v1/episodes/{episode_id}/step", json={"action": tags(call("slow", seconds=6))})
                return r.status_code

        with ThreadPoolExecutor(max_workers=2) as pool:
            steps = [pool.submit(slow_step, e) for e in episodes]
            eventually_full = time.monotonic() + 5
            while True:  # both slow steps are in flight once a third request is refused
                started = time.monotonic()
                r = c.get("/v1/envs")
                if r.status_code == 503 or time.monotonic() > eventually_full:
                    break
                time.sleep(0.1)
            err = expect_error(r, 503, "overloaded")
            assert time.monotonic() - started < 2, "overload is refused at once, never queued"
            assert r.headers["Retry-After"] == "1" and err["retryable"] is True
            assert "max_concurrent_requests" in err["message"]
            assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200

            async def handshake() -> None:
                url = server.base_url.replace("http://", "ws://") + "/v1/ws"
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url):
                        pass
                assert refused.value.response.status_code == 503
                assert json.loads(refused.value.response.body)["error"]["code"] == "overloaded"

            asyncio.run(handshake())
            assert [s.result(timeout=60) for s in steps] == [200, 200]
        assert c.get("/v1/envs").status_code == 200, "the slots are free again"
        for episode_id in episodes:
            assert c.delete(f"/v1/episodes/{episode_id}").status_code == 204


def test_the_limits_are_settings_with_variables() -> None:
    settings = Settings.from_env({"TOOLGYM_RATE_LIMIT_PER_KEY": "2.5", "TOOLGYM_MAX_LIVE_EPISODES_PER_KEY": "3",
                                  "TOOLGYM_MAX_CONCURRENT_REQUESTS": "7"})
    assert (settings.rate_limit_per_key, settings.max_live_episodes_per_key, settings.max_concurrent_requests) == (
        2.5, 3, 7)
    settings.validate()
    for bad in ({"rate_limit_per_key": -1.0}, {"max_live_episodes_per_key": -1}, {"max_concurrent_requests": 0}):
        with pytest.raises(ValueError):
            Settings(**bad).validate()  # type: ignore[arg-type]
