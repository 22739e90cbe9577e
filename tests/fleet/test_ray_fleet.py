"""``toolgym serve --ray ADDRESS --replicas 2`` on a real two-node Ray cluster (tests/fleet/conftest.py).

What is checked, through the entry point and against the replicas directly:

- the two replicas are Ray actors on the two nodes, and ``GET /v1/version`` of each answers
  the token its episode ids carry;
- resets spread over both replicas, every later call on an episode reaches the replica its id
  names (asked directly, the other replica answers 404), and the one-URL clients (``EnvClient``,
  ``FleetClient``) work against the entry point;
- a replica's actor process killed with SIGKILL while a step runs on it: that step, and every
  later call on its episodes, answers ``503 sandbox_error`` (retryable) within seconds, never
  a hang and never a reward; the other replica's episodes go on, and new resets go there only;
- then the last replica frozen with SIGSTOP: its health checks find it lost, the step waiting
  on it answers ``503 sandbox_error``, and a reset with no replica left answers 503 at once;
- an episode on the Docker backend, through the entry point (marker ``docker``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fleet_kit import Fleet

from toolgym.client import EnvClient, FleetClient, RetryPolicy
from toolgym.client._routing import replica_of

pytestmark = pytest.mark.cluster

FUNCTIONCALL = "toolgym/FunctionCall-v0"
CODEMATH = "toolgym/CodeMath-v0"
NO_RETRY = RetryPolicy(max_retries=0)
PROMPT_S = 5.0
"""How soon a call on a lost replica must be answered (the health check runs every second)."""


@pytest.fixture(scope="module")
def fleet(fleet_factory: Callable[..., Fleet]) -> Fleet:
    return fleet_factory()


def reset(client: httpx.Client, env_id: str = FUNCTIONCALL, **options: Any) -> str:
    r = client.post("/v1/episodes", json={"env_id": env_id, "options": {"split": "train", **options}})
    assert r.status_code == 201, r.text
    return str(r.json()["episode_id"])


def test_replicas_are_actors_on_both_nodes_and_version_names_each(fleet: Fleet) -> None:
    version = fleet.version()
    assert version["replica"] == "entry" and version["api_version"] == "v1", version
    rows = version["replicas"]
    assert len(rows) == 2 and all(row["alive"] for row in rows), rows
    assert len({row["node_id"] for row in rows}) == 2, f"STRICT_SPREAD puts one replica per node: {rows}"
    assert len({row["pid"] for row in rows}) == 2 and fleet.process.pid not in {row["pid"] for row in rows}
    for row in rows:
        own = httpx.get(f"{row['base_url']}/v1/version", timeout=10.0).json()
        assert own["replica"] == row["replica"], (own, row)
        assert own["envs"] == version["envs"]
    ready = httpx.get(f"{fleet.base_url}/readyz", timeout=10.0)
    assert ready.status_code == 200 and {r["replica"] for r in ready.json()["replicas"]} == {r["replica"] for r in rows}


def test_resets_spread_and_ids_route_back_to_their_replica(fleet: Fleet) -> None:
    rows = {row["replica"]: row["base_url"] for row in fleet.replicas()}
    with httpx.Client(base_url=fleet.base_url, timeout=60.0) as client:
        episodes = [reset(client) for _ in range(4)]
        assert Counter(replica_of(e) for e in episodes) == dict.fromkeys(rows, 2), episodes
        for episode in episodes:
            own = rows[replica_of(episode)]  # type: ignore[index]
            other = next(url for url in rows.values() if url != own)
            assert httpx.get(f"{own}/v1/episodes/{episode}", timeout=10.0).status_code == 200
            assert httpx.get(f"{other}/v1/episodes/{episode}", timeout=10.0).status_code == 404
            r = client.post(f"/v1/episodes/{episode}/step", json={"action": "I have no tool to call."})
            assert r.status_code == 200, r.text
            assert client.get(f"/v1/episodes/{episode}").json()["episode_id"] == episode
            assert client.delete(f"/v1/episodes/{episode}").status_code in (200, 204)
        unknown = client.get("/v1/episodes/ep-abcdef-0123456789abcdef0123")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "episode_not_found"


def test_the_one_url_clients_work_against_the_entry_point(fleet: Fleet) -> None:
    with EnvClient(fleet.base_url, retry=NO_RETRY) as client:
        episode = client.reset(FUNCTIONCALL, options={"split": "train"})
        step = client.step(episode.episode_id, "No tool needed.")
        assert step.info["status"] in ("ok", "invalid_action"), step.info
        client.close(episode.episode_id)
    with FleetClient([fleet.base_url], retry=NO_RETRY) as many:
        opened = [many.reset(FUNCTIONCALL, options={"split": "train"}) for _ in range(2)]
        assert {replica_of(e.episode_id) for e in opened} == {row["replica"] for row in fleet.replicas()}
        for episode in opened:
            assert many.base_url_of(episode.episode_id) == fleet.base_url
            many.step(episode.episode_id, "No tool needed.")
            many.close(episode.episode_id)


@pytest.mark.docker
def test_an_episode_on_the_docker_backend(fleet_factory: Callable[..., Fleet]) -> None:
    """One replica is enough here: placement and routing are the process fleet's tests."""
    fleet = fleet_factory(backend="docker", replicas=1)
    (row,) = fleet.replicas()
    assert httpx.get(f"{row['base_url']}/readyz", timeout=10.0).json()["backend"]["name"] == "docker"
    with httpx.Client(base_url=fleet.base_url, timeout=120.0) as client:
        episode = reset(client, CODEMATH, timeout_s=20.0)
        assert replica_of(episode) == row["replica"]
        r = client.post(f"/v1/episodes/{episode}/step", json={"action": "```python\nprint(3 + 4)\n```"})
        assert r.status_code == 200, r.text
        assert "7" in str(r.json()["observation"]) and r.json()["info"]["status"] == "ok", r.json()
        assert client.delete(f"/v1/episodes/{episode}").status_code in (200, 204)


def test_a_replica_killed_mid_step_gives_a_prompt_retryable_infra_error(fleet: Fleet) -> None:
    """Last in this module: it loses one of the shared fleet's replicas."""
    rows = {row["replica"]: row for row in fleet.replicas()}
    with httpx.Client(base_url=fleet.base_url, timeout=120.0) as client:
        episodes = [reset(client, CODEMATH, timeout_s=30.0) for _ in range(4)]
        by_replica: dict[str, list[str]] = {}
        for episode in episodes:
            by_replica.setdefault(replica_of(episode) or "", []).append(episode)
        assert sorted(by_replica) == sorted(rows), episodes
        victim, survivor = sorted(rows)
        doomed, kept = by_replica[victim], by_replica[survivor]

        # A step that sleeps in its sandbox is in flight on the victim when its actor is killed.
        answer: dict[str, Any] = {}

        def slow_step() -> None:
            started = time.monotonic()
            r = client.post(f"/v1/episodes/{doomed[0]}/step",
                            json={"action": "```python\nimport time\ntime.sleep(15)\nprint(7)\n```"})
            answer.update(status=r.status_code, body=r.json(), took=time.monotonic() - started)

        stepping = threading.Thread(target=slow_step)
        stepping.start()
        time.sleep(2.0)
        killed_at = time.monotonic()
        os.kill(rows[victim]["pid"], signal.SIGKILL)
        stepping.join(timeout=30.0)
        assert not stepping.is_alive(), "the step on the killed replica hangs"
        answered_s = time.monotonic() - killed_at
        print(f"\nkilled replica {victim} (SIGKILL): the in-flight step got {answer['status']}"
              f" {answer['body'].get('error', {}).get('code')} {answered_s:.2f} s after the kill")
        assert answered_s < PROMPT_S, answer
        assert answer["status"] == 503, answer
        error = answer["body"]["error"]
        assert error["code"] == "sandbox_error" and error["retryable"] is True, error
        assert "reward" not in answer["body"]

        # Later calls on its episodes are answered at once, the same way.
        started = time.monotonic()
        r = client.post(f"/v1/episodes/{doomed[1]}/step", json={"action": "```python\nprint(1)\n```"})
        print(f"a later step on another of its episodes: {r.status_code} in {time.monotonic() - started:.3f} s")
        assert time.monotonic() - started < 1.0 and r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "sandbox_error" and r.json()["error"]["details"]["episode_lost"] is True

        # The survivor's episodes go on, and every new reset goes to the survivor.
        for episode in kept:
            r = client.post(f"/v1/episodes/{episode}/step", json={"action": "```python\nprint(3 + 4)\n```"})
            assert r.status_code == 200, r.text
        assert {replica_of(reset(client)) for _ in range(4)} == {survivor}
        states = {row["replica"]: row["alive"] for row in fleet.replicas()}
        assert states == {victim: False, survivor: True}, states
        assert httpx.get(f"{fleet.base_url}/readyz", timeout=10.0).status_code == 200
        metrics = httpx.get(f"{fleet.base_url}/metrics", timeout=10.0).text
        assert f'toolgym_fleet_replica_up{{replica="{victim}"}} 0' in metrics, metrics

    # The client library sees the same error class: retryable, so a trainer masks the rollout.
    with EnvClient(fleet.base_url, retry=NO_RETRY) as lib:
        from toolgym.errors import SandboxError

        with pytest.raises(SandboxError) as caught:
            lib.step(doomed[1], "```python\nprint(1)\n```")
        assert caught.value.retryable


def test_a_hung_replica_is_lost_by_its_health_checks_and_then_no_reset_waits(fleet: Fleet) -> None:
    """After the kill above one replica is left; SIGSTOP freezes it (its port still accepts, nothing answers)."""
    (survivor,) = [row for row in fleet.replicas() if row["alive"]]
    with httpx.Client(base_url=fleet.base_url, timeout=120.0) as client:
        episode = reset(client)
        os.kill(survivor["pid"], signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = client.post(f"/v1/episodes/{episode}/step", json={"action": "No tool needed."})
            took = time.monotonic() - started
            print(f"\nhung replica {survivor['replica']} (SIGSTOP): the step waiting on it got {r.status_code}"
                  f" after {took:.2f} s")
            # Three failed checks, a second apart, each given 2 s: lost within about 9 s.
            assert r.status_code == 503 and r.json()["error"]["code"] == "sandbox_error", r.text
            assert took < 15.0, took
            rows = {row["replica"]: row for row in fleet.replicas()}
            assert "health checks" in rows[survivor["replica"]]["reason"], rows
            started = time.monotonic()
            r = client.post("/v1/episodes", json={"env_id": FUNCTIONCALL, "options": {"split": "train"}})
            assert time.monotonic() - started < 1.0 and r.status_code == 503, r.text
            assert r.json()["error"]["retryable"] is True
            assert httpx.get(f"{fleet.base_url}/readyz", timeout=10.0).status_code == 503
        finally:
            os.kill(survivor["pid"], signal.SIGCONT)
