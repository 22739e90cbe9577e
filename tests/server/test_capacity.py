"""Capacity over real HTTP with Docker: the live-episode limit (503 + Retry-After,
``at_capacity``) and the per-key quota (429), sequentially and under concurrent resets."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from server_kit import (
    ENV,
    Server,
    ServerFarm,
    check_healthy,
    close,
    count_containers,
    expect_error,
    reset,
    step,
    wait_for_teardown,
)

pytestmark = pytest.mark.docker

KEY_A, KEY_B = "capacity-key-a", "capacity-key-b"


@pytest.fixture(scope="module")
def server(farm: ServerFarm) -> Server:
    return farm.start("docker", max_live_episodes=2, warm_pool_size=0)


@pytest.fixture(scope="module")
def quota_server(farm: ServerFarm) -> Server:
    return farm.start("docker", api_keys=(KEY_A, KEY_B), max_live_episodes=4, max_live_episodes_per_key=1,
                      warm_pool_size=0)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
        for episode in c.get("/v1/episodes", params={"status": "live"}).json()["episodes"]:
            close(c, episode["episode_id"])
    assert server.manager.open_episodes == 0


def reset_body(task_id: str = "tu-single-1") -> dict[str, object]:
    return {"env_id": ENV, "task_id": task_id}


def test_third_reset_is_503_with_retry_after_and_closing_frees_a_slot(server: Server, client: httpx.Client) -> None:
    first = reset(client)["episode_id"]
    second = reset(client)["episode_id"]
    r = client.post("/v1/episodes", json=reset_body())
    err = expect_error(r, 503, "at_capacity")
    assert err["retryable"] is True
    assert int(r.headers["Retry-After"]) >= 1
    assert "max_live_episodes" in err["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    wait_for_teardown(server)  # the previous test's closed episodes
    assert count_containers(server.instance) == 2, "a refused reset starts no sandbox"

    close(client, first)
    third = reset(client)["episode_id"]
    expect_error(client.post("/v1/episodes", json=reset_body()), 503, "at_capacity")
    # A finished episode frees its slot too.
    assert step(client, second, "no idea")["terminated"]
    fourth = reset(client)["episode_id"]
    assert server.manager.open_episodes == 2
    for episode_id in (third, fourth):
        close(client, episode_id)
    assert client.get("/readyz").status_code == 200
    check_healthy(server, client)


def test_concurrent_resets_never_exceed_the_limit(server: Server, client: httpx.Client) -> None:
    def one(_: int) -> httpx.Response:
        with server.client() as c:
            return c.post("/v1/episodes", json=reset_body())

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(one, range(5)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 201, 503, 503, 503], [r.text for r in responses]
    for r in responses:
        if r.status_code == 503:
            expect_error(r, 503, "at_capacity")
    assert server.manager.open_episodes == 2
    wait_for_teardown(server)
    assert count_containers(server.instance) == 2
    check_healthy(server, client)


def test_per_key_quota_is_429(quota_server: Server) -> None:
    with quota_server.client(KEY_A) as a, quota_server.client(KEY_B) as b:
        mine = reset(a)["episode_id"]
        err = expect_error(a.post("/v1/episodes", json=reset_body()), 429, "quota_exceeded")
        assert "max_live_episodes_per_key" in err["message"]
        theirs = reset(b)["episode_id"]  # another key is not held back by mine
        close(a, mine)
        again = reset(a)["episode_id"]
        for client, episode_id in ((a, again), (b, theirs)):
            close(client, episode_id)
        check_healthy(quota_server, a)


def test_per_key_quota_holds_under_concurrent_resets(quota_server: Server) -> None:
    def one(_: int) -> httpx.Response:
        with quota_server.client(KEY_A) as c:
            return c.post("/v1/episodes", json=reset_body())

    with ThreadPoolExecutor(max_workers=3) as pool:
        responses = list(pool.map(one, range(3)))
    assert sorted(r.status_code for r in responses) == [201, 429, 429], [r.text for r in responses]
    assert quota_server.manager.open_episodes == 1
    with quota_server.client(KEY_A) as a:
        for r in responses:
            if r.status_code == 201:
                close(a, r.json()["episode_id"])
        check_healthy(quota_server, a)
