"""Idempotent steps over real HTTP with Docker (docs/architecture.md: a retried step returns the stored
result instead of acting twice).

The action used solves a gold the first time (reward 1.0) and nothing the second (0.0), so a
step that acted twice would show.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from server_kit import Server, ServerFarm, call, check_healthy, expect_error, metric, reset, state, tags

pytestmark = pytest.mark.docker

TERYN = tags(call("get_mountain", name="Mount Teryn"))
OSKOL = tags(call("get_mountain", name="Mount Oskol"))


@pytest.fixture(scope="module")
def server(farm: ServerFarm) -> Server:
    return farm.start("docker")


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def episode(client: httpx.Client) -> Iterator[str]:
    episode_id = str(reset(client, "tu-parallel-1")["episode_id"])
    yield episode_id
    client.delete(f"/v1/episodes/{episode_id}")


def post_step(client: httpx.Client, episode_id: str, action: Any, key: str | None = None,
              **extra: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/v1/episodes/{episode_id}/step", json={"action": action, **extra}, headers=headers)


def test_same_idempotency_key_returns_the_stored_result(client: httpx.Client, episode: str) -> None:
    steps_before = metric(client, "toolgym_steps_total")
    first = post_step(client, episode, TERYN, key="req-1")
    assert first.status_code == 200 and first.json()["reward"] == 1.0
    again = post_step(client, episode, TERYN, key="req-1")
    assert again.status_code == 200
    assert again.json() == first.json()
    # The key names the request: a retry is answered from the store whatever its body.
    other_body = post_step(client, episode, "a final answer", key="req-1")
    assert other_body.json() == first.json()
    st = state(client, episode)
    assert st["turn"] == 1 and st["status"] == "live" and len(st["steps"]) == 1
    assert metric(client, "toolgym_steps_total") == steps_before + 1, "the step acted once"
    # A new key acts: the same call now solves nothing.
    fresh = post_step(client, episode, TERYN, key="req-2")
    assert fresh.json()["reward"] == 0.0 and state(client, episode)["turn"] == 2


def test_concurrent_retries_act_once(server: Server, client: httpx.Client, episode: str) -> None:
    def one(_: int) -> httpx.Response:
        with server.client() as c:
            return post_step(c, episode, TERYN, key="burst")

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(one, range(4)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert all(r.json() == responses[0].json() for r in responses)
    assert responses[0].json()["reward"] == 1.0
    assert state(client, episode)["turn"] == 1


def test_expected_turn_of_a_played_turn_returns_its_result(client: httpx.Client, episode: str) -> None:
    turn0 = post_step(client, episode, TERYN, expected_turn=0)
    assert turn0.status_code == 200 and turn0.json()["reward"] == 1.0
    turn1 = post_step(client, episode, OSKOL, expected_turn=1)
    assert turn1.status_code == 200 and turn1.json()["reward"] == 1.0
    assert post_step(client, episode, OSKOL, expected_turn=0).json() == turn0.json()
    assert post_step(client, episode, TERYN, expected_turn=1).json() == turn1.json()
    assert state(client, episode)["turn"] == 2


def test_expected_turn_ahead_is_409(client: httpx.Client, episode: str) -> None:
    err = expect_error(post_step(client, episode, TERYN, expected_turn=1), 409, "turn_mismatch")
    assert err["details"] == {"episode_id": episode, "expected_turn": 1, "turn": 0}
    assert state(client, episode)["turn"] == 0
    assert post_step(client, episode, TERYN, expected_turn=0).json()["reward"] == 1.0


def test_retries_of_the_last_step_after_the_end(client: httpx.Client, episode: str) -> None:
    final = post_step(client, episode, "3120, 2875", key="final")
    assert final.status_code == 200 and final.json()["terminated"]
    assert post_step(client, episode, "3120, 2875", key="final").json() == final.json()
    assert post_step(client, episode, "3120, 2875", expected_turn=0).json() == final.json()
    expect_error(post_step(client, episode, "3120, 2875", key="new"), 409, "episode_finished")
    expect_error(post_step(client, episode, "x", expected_turn=1), 409, "episode_finished")


def test_keys_are_per_episode(server: Server, client: httpx.Client, episode: str) -> None:
    other = reset(client, "tu-parallel-1")["episode_id"]
    try:
        assert post_step(client, episode, TERYN, key="shared").json()["reward"] == 1.0
        assert post_step(client, other, OSKOL, key="shared").json()["observation"]["messages"][0]["content"] \
            == '{"elevation_m": 2875, "range": "Ashen Spine"}'
        assert state(client, other)["turn"] == 1
    finally:
        client.delete(f"/v1/episodes/{other}")
    check_healthy(server, client)


def test_a_reset_retried_with_the_same_key_returns_the_same_episode(server: Server, client: httpx.Client) -> None:
    body = {"env_id": "toolgym/ToolUse-v0", "task_id": "tu-single-1"}
    first = client.post("/v1/episodes", json=body, headers={"Idempotency-Key": "reset-k1"})
    again = client.post("/v1/episodes", json=body, headers={"Idempotency-Key": "reset-k1"})
    other = client.post("/v1/episodes", json=body, headers={"Idempotency-Key": "reset-k2"})
    assert first.status_code == again.status_code == other.status_code == 201
    assert again.json() == first.json()
    assert other.json()["episode_id"] != first.json()["episode_id"]
    for eid in {first.json()["episode_id"], other.json()["episode_id"]}:
        client.delete(f"/v1/episodes/{eid}")


def test_concurrent_resets_with_one_key_make_one_episode(server: Server, client: httpx.Client) -> None:
    body = {"env_id": "toolgym/ToolUse-v0", "task_id": "tu-single-1"}
    live_before = len(client.get("/v1/episodes", params={"status": "live", "limit": 1000}).json()["episodes"])
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(
            lambda _: client.post("/v1/episodes", json=body, headers={"Idempotency-Key": "reset-burst"}), range(4)
        ))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["episode_id"] for a in answers}) == 1
    live_after = len(client.get("/v1/episodes", params={"status": "live", "limit": 1000}).json()["episodes"])
    assert live_after == live_before + 1
    client.delete(f"/v1/episodes/{answers[0].json()['episode_id']}")


def test_a_failed_reset_is_not_remembered(server: Server, client: httpx.Client) -> None:
    bad = client.post("/v1/episodes", json={"env_id": "toolgym/ToolUse-v0", "task_id": "nope"},
                      headers={"Idempotency-Key": "reset-k3"})
    assert bad.status_code == 404
    good = client.post("/v1/episodes", json={"env_id": "toolgym/ToolUse-v0", "task_id": "tu-single-1"},
                       headers={"Idempotency-Key": "reset-k3"})
    assert good.status_code == 201
    client.delete(f"/v1/episodes/{good.json()['episode_id']}")
