"""Episode and server lifecycle over real HTTP, real Docker and a real SQLite file: close,
state and trajectory export, the idle reaper, a sandbox killed from outside, orphan removal
on restart, shutdown, durable trajectories, metrics and readiness."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_kit import (
    ENV,
    LABEL_EPISODE,
    Server,
    ServerFarm,
    call,
    check_healthy,
    close,
    count_containers,
    docker,
    episode_containers,
    expect_error,
    metric,
    openai_message,
    register,
    reset,
    state,
    step,
    tags,
    tool_message,
    tooluse_record,
    wait_for_teardown,
    wait_gone,
)

from toolgym.server.sandbox.base import SandboxSpec

pytestmark = pytest.mark.docker

MAKER = tags(call("find_manufacturer", product="Halcyon drone"))
FOUNDER = tags(call("get_company", company="Brightwell Dynamics", field="founder"))
SLOW_SOURCE = "import time\ndef slow(seconds):\n    time.sleep(seconds)\n    return 'SLOW-GOLD-42'\n"


def slow_record() -> dict[str, Any]:
    return tooluse_record({"slow": SLOW_SOURCE}, golds={"slow": ["SLOW-GOLD-42"]}, answer="SLOW-GOLD-42",
                          params={"slow": {"seconds": "number"}})


@pytest.fixture(scope="module")
def server(farm: ServerFarm) -> Server:
    return farm.start("docker")


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def kill_episode_container(episode_id: str) -> str:
    """Kill (not remove) the running container labelled for the episode, as an outside
    event would; returns its id."""
    with docker() as client:
        (container,) = client.containers.list(filters={"label": f"{LABEL_EPISODE}={episode_id}"})
        container.kill()
        return str(container.id)


# --- close, state, trajectory --------------------------------------------------------------------
def test_delete_closes_and_removes_the_container(server: Server, client: httpx.Client) -> None:
    episode_id = reset(client, "tu-multi-1")["episode_id"]
    assert len(episode_containers(episode_id, running_only=True)) == 1
    before = count_containers(server.instance)
    close(client, episode_id)
    # The episode is over at once; its container goes in the background, within a bound.
    st = state(client, episode_id)
    assert st["status"] == "finished" and st["reason"] == "closed"
    wait_gone(episode_id)
    wait_for_teardown(server)
    assert count_containers(server.instance) <= before - 1 + server.settings.warm_pool_size
    close(client, episode_id)  # idempotent
    # An episode that ends by itself releases its container too.
    done = reset(client, "tu-single-1")["episode_id"]
    assert step(client, done, "no idea")["terminated"]
    wait_gone(done)
    check_healthy(server, client)


def test_delete_and_the_final_step_do_not_wait_for_the_removal(server: Server, client: httpx.Client) -> None:
    """The container is removed in the background: right after the answer it is usually
    still there (a removal takes 60 ms and more, the answer a few ms). Once in three tries is
    enough to show the request did not wait; before, it was never there."""
    removed_before = metric(client, "toolgym_teardown_removed")
    still_there = 0
    for i in range(3):
        episode_id = reset(client, "tu-single-1")["episode_id"]
        if i == 0:
            assert step(client, episode_id, "no idea")["terminated"]  # the final step releases it
        else:
            close(client, episode_id)
        still_there += bool(episode_containers(episode_id))
        wait_gone(episode_id)
    assert still_there >= 1, "every answer came after its container was gone: the removal is on the request path"
    wait_for_teardown(server)
    assert metric(client, "toolgym_teardown_removed") >= removed_before + 3
    assert metric(client, "toolgym_teardown_backlog") == 0
    check_healthy(server, client)


def test_state_shows_the_trajectory(client: httpx.Client) -> None:
    started = reset(client, "tu-multi-1", reward="solve_precision")
    episode_id = started["episode_id"]
    first = step(client, episode_id, MAKER)
    second = step(client, episode_id, openai_message(call("get_company", company="Brightwell Dynamics")))
    st = state(client, episode_id)
    assert st["episode_id"] == episode_id and st["env_id"] == ENV and st["task_id"] == "tu-multi-1"
    assert st["split"] == "train" and st["status"] == "live" and st["reason"] is None
    assert st["options"]["reward"] == "solve_precision"
    assert st["turn"] == 2 and len(st["steps"]) == 2
    assert st["reset"] == {"observation": started["observation"], "info": started["info"]}
    assert [s["turn"] for s in st["steps"]] == [0, 1]
    assert st["steps"][0]["action"] == MAKER
    assert st["steps"][1]["action"]["tool_calls"][0]["function"]["name"] == "get_company"
    for recorded, live in zip(st["steps"], (first, second), strict=True):
        for key in ("observation", "reward", "terminated", "truncated", "info"):
            assert recorded[key] == live[key]
    assert st["total_reward"] == pytest.approx(first["reward"] + second["reward"]) == 2.0
    listed = client.get("/v1/episodes", params={"status": "live"}).json()["episodes"]
    (mine,) = [e for e in listed if e["episode_id"] == episode_id]
    assert mine["turn"] == 2 and mine["total_reward"] == 2.0
    close(client, episode_id)


def test_trajectory_is_jsonl(client: httpx.Client) -> None:
    started = reset(client, "tu-multi-1")
    episode_id = started["episode_id"]
    step(client, episode_id, MAKER)
    step(client, episode_id, FOUNDER)
    step(client, episode_id, "Imara Solberg")
    r = client.get(f"/v1/episodes/{episode_id}/trajectory")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.text.endswith("\n")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 4
    head = lines[0]
    assert head["turn"] is None and head["episode_id"] == episode_id and head["task_id"] == "tu-multi-1"
    assert head["observation"] == started["observation"]
    assert [line["turn"] for line in lines[1:]] == [0, 1, 2]
    assert [line["reward"] for line in lines[1:]] == [1.0, 1.0, 1.0]
    assert lines[1]["action"] == MAKER and lines[3]["terminated"] is True
    assert lines[3]["info"]["reason"] == "answered"


# --- the idle reaper -------------------------------------------------------------------------------
def test_idle_reaper_closes_idle_episodes(farm_fn: ServerFarm) -> None:
    server = farm_fn.start("docker", idle_timeout_s=1.0, reaper_interval_s=0.5, warm_pool_size=0)
    with server.client() as client:
        idle = reset(client, "tu-single-1")["episode_id"]
        busy = reset(client, "tu-multi-1")["episode_id"]
        deadline = time.monotonic() + 6
        while state(client, idle)["status"] == "live":
            assert time.monotonic() < deadline, "the reaper did not close the idle episode"
            result = step(client, busy, tags(call("get_person", name="Imara Solberg")))
            assert result["info"]["status"] == "ok"
            time.sleep(0.3)
        st = state(client, idle)
        assert st["status"] == "finished" and st["reason"] == "idle_timeout"
        # The reaper removes the sandbox right after marking the episode (in the background).
        wait_until(lambda: episode_containers(idle) == [], 10, "the idle episode's container to go")
        err = expect_error(client.post(f"/v1/episodes/{idle}/step", json={"action": "x"}), 409, "episode_finished")
        assert err["details"]["reason"] == "idle_timeout"
        assert state(client, busy)["status"] == "live", "an episode in use is not reaped"
        assert tool_message(step(client, busy, MAKER)) == "Brightwell Dynamics"
        assert metric(client, "toolgym_episodes_finished_total", reason="idle_timeout") == 1
        close(client, busy)


# --- a sandbox killed from outside ---------------------------------------------------------------------
def assert_never_scored_dead(response: httpx.Response, expected_reward: float) -> dict[str, Any] | None:
    """The step after the sandbox died is either a transparent retry on a new sandbox (the
    right reward) or a retryable 503, never a 200 with what the dead sandbox gave."""
    if response.status_code == 503:
        err = expect_error(response, 503, response.json()["error"]["code"])
        assert err["code"] in ("sandbox_error", "sandbox_timeout") and err["retryable"] is True
        assert "Retry-After" in response.headers
        return None
    assert response.status_code == 200, response.text
    result = dict(response.json())
    assert result["reward"] == expected_reward, result
    assert result["info"]["status"] == "ok"
    return result


def test_sandbox_killed_between_steps_is_replaced(server: Server, client: httpx.Client) -> None:
    episode_id = reset(client, "tu-multi-1")["episode_id"]
    assert step(client, episode_id, MAKER)["reward"] == 1.0
    failures = metric(client, "toolgym_sandbox_failures_total")
    dead = kill_episode_container(episode_id)
    result = assert_never_scored_dead(client.post(f"/v1/episodes/{episode_id}/step", json={"action": FOUNDER}), 1.0)
    if result is None:  # a 503 asks for a retry; the retry must succeed on a fresh sandbox
        result = assert_never_scored_dead(
            client.post(f"/v1/episodes/{episode_id}/step", json={"action": FOUNDER, "expected_turn": 1}), 1.0)
    assert result is not None and tool_message(result) == "Imara Solberg"
    assert metric(client, "toolgym_sandbox_failures_total") >= failures + 1
    containers = episode_containers(episode_id)
    assert [c["Id"] for c in containers] != [dead] and len(containers) == 1, "the dead one is removed"
    assert containers[0]["State"] == "running"
    final = step(client, episode_id, "Imara Solberg")
    assert final["reward"] == 1.0 and final["info"]["metrics"] == {
        "solve_precision": 1.0, "solve_rate": 1.0, "solve_f1": 1.0}, "the episode kept its state"
    assert state(client, episode_id)["turn"] == 3
    check_healthy(server, client)


def test_sandbox_killed_during_a_step(server: Server, client: httpx.Client) -> None:
    (task_id,) = register(client, slow_record())
    episode_id = reset(client, task_id, tool_timeout_s=5)["episode_id"]
    action = tags(call("slow", seconds=1.5))
    killer = threading.Timer(0.5, kill_episode_container, args=(episode_id,))
    killer.start()
    try:
        response = client.post(f"/v1/episodes/{episode_id}/step", json={"action": action, "expected_turn": 0})
    finally:
        killer.join()
    result = assert_never_scored_dead(response, 1.0)
    if result is None:
        result = assert_never_scored_dead(
            client.post(f"/v1/episodes/{episode_id}/step", json={"action": action, "expected_turn": 0}), 1.0)
    assert result is not None and tool_message(result) == "SLOW-GOLD-42"
    assert state(client, episode_id)["turn"] == 1
    assert len(episode_containers(episode_id)) == 1
    close(client, episode_id)
    check_healthy(server, client)


def test_warm_sandbox_killed_before_use_is_not_handed_out(server: Server, client: httpx.Client) -> None:
    from toolgym.server.sandbox.docker import LABEL_INSTANCE

    wait_until(lambda: server.manager.pool.ready == 1, 30, "the warm pool to fill")
    live = {e["episode_id"] for e in client.get("/v1/episodes", params={"status": "live"}).json()["episodes"]}
    with docker() as d:
        warm = [c for c in d.containers.list(filters={"label": f"{LABEL_INSTANCE}={server.instance}"})
                if c.labels[LABEL_EPISODE] not in live]
        assert len(warm) == 1
        warm[0].kill()
    episode_id = reset(client, "tu-single-1")["episode_id"]
    result = step(client, episode_id, tags(call("get_city_info", city="Varnholt")))
    assert result["reward"] == 1.0 and result["info"]["status"] == "ok"
    assert episode_containers(warm[0].labels[LABEL_EPISODE]) == [], "the dead warm sandbox is removed"
    close(client, episode_id)
    check_healthy(server, client)


# --- restarts and shutdown -----------------------------------------------------------------------------
def test_restart_removes_what_the_predecessor_left(farm_fn: ServerFarm, sandbox_image: str) -> None:
    from toolgym.server.sandbox.docker import DockerBackend

    instance, bystander_instance = farm_fn.new_instance(), farm_fn.new_instance()
    predecessor, bystander = DockerBackend(image=sandbox_image, instance=instance), \
        DockerBackend(image=sandbox_image, instance=bystander_instance)
    try:
        orphans = [predecessor.create(SandboxSpec(labels={LABEL_EPISODE: f"orphan-{i}"})) for i in range(2)]
        survivor = bystander.create(SandboxSpec(labels={LABEL_EPISODE: "someone-elses"}))
        assert count_containers(instance) == 2
        server = farm_fn.start("docker", instance_id=instance, warm_pool_size=0)
        assert count_containers(instance) == 0, "startup removes its instance's leftovers"
        assert count_containers(bystander_instance) == 1, "and only those"
        with server.client() as client:
            episode_id = reset(client, "tu-single-1")["episode_id"]
            assert step(client, episode_id, tags(call("get_city_info", city="Varnholt")))["reward"] == 1.0
            close(client, episode_id)
        for orphan in orphans:
            assert orphan.close() is False, "already removed"
        assert survivor.close() is True
    finally:
        for backend, name in ((predecessor, instance), (bystander, bystander_instance)):
            backend.remove_owned(name)
            backend.close()


def test_stop_finishes_in_flight_steps_and_removes_every_container(farm_fn: ServerFarm) -> None:
    server = farm_fn.start("docker", warm_pool_size=2)
    with server.client() as client:
        (task_id,) = register(client, slow_record())
        idle = reset(client, "tu-single-1")["episode_id"]
        busy = reset(client, task_id, tool_timeout_s=5)["episode_id"]
        wait_until(lambda: server.manager.pool.ready == 2, 30, "the warm pool to fill")
        assert count_containers(server.instance) == 4
        outcome: dict[str, Any] = {}

        def in_flight() -> None:
            with server.client() as c:
                outcome["response"] = c.post(f"/v1/episodes/{busy}/step",
                                             json={"action": tags(call("slow", seconds=1.5))})

        worker = threading.Thread(target=in_flight)
        worker.start()
        time.sleep(0.5)
        server.stop()
        worker.join(timeout=30)
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert response.json()["reward"] == 1.0 and tool_message(response.json()) == "SLOW-GOLD-42"
    assert count_containers(server.instance) == 0
    assert idle  # the idle episode's container went with the rest


def test_stop_drains_the_teardown_queue(farm_fn: ServerFarm) -> None:
    """Closes answered before their containers went; stopping right after still removes
    each of them through the teardown queue (not only through the final label sweep)."""
    server = farm_fn.start("docker", warm_pool_size=0)
    with server.client() as client:
        episodes = [reset(client, "tu-single-1")["episode_id"] for _ in range(3)]
        for episode_id in episodes:
            close(client, episode_id)
    server.stop()
    status = server.manager.status()
    assert status.teardown.backlog == 0 and status.teardown.failed == 0
    assert status.teardown.removed == 3
    assert count_containers(server.instance) == 0


def test_trajectories_survive_a_restart(farm_fn: ServerFarm, tmp_path: Any) -> None:
    settings: dict[str, Any] = {"instance_id": farm_fn.new_instance(), "db_path": str(tmp_path / "durable.db"),
                                "warm_pool_size": 0}
    first = farm_fn.start("docker", **settings)
    with first.client() as client:
        (task_id,) = register(client, tooluse_record({}, golds={"echo": ["DURABLE"]}, answer="DURABLE"))
        finished = reset(client, "tu-multi-1")["episode_id"]
        played = [step(client, finished, MAKER), step(client, finished, FOUNDER),
                  step(client, finished, "Imara Solberg")]
        live = reset(client, task_id)["episode_id"]
        live_step = step(client, live, tags(call("echo", text="DURABLE")))
    first.stop()

    second = farm_fn.start("docker", **settings)
    with second.client() as client:
        st = state(client, finished)
        assert st["status"] == "finished" and st["reason"] == "answered" and st["turn"] == 3
        assert [s["reward"] for s in st["steps"]] == [p["reward"] for p in played]
        assert st["steps"][2]["info"] == played[2]["info"]
        assert st["total_reward"] == pytest.approx(3.0)
        lines = client.get(f"/v1/episodes/{finished}/trajectory").text.splitlines()
        assert len(lines) == 4 and json.loads(lines[3])["reward"] == 1.0
        interrupted = state(client, live)
        assert interrupted["status"] == "interrupted" and interrupted["turn"] == 1
        assert interrupted["steps"][0]["reward"] == live_step["reward"] == 1.0
        expect_error(client.post(f"/v1/episodes/{live}/step", json={"action": "x"}), 409, "episode_finished")
        statuses = {e["episode_id"]: e["status"] for e in client.get("/v1/episodes").json()["episodes"]}
        assert statuses == {finished: "finished", live: "interrupted"}
        # Registered tasks survive too.
        again = reset(client, task_id)["episode_id"]
        assert step(client, again, tags(call("echo", text="DURABLE")))["reward"] == 1.0
        close(client, again)


# --- metrics and readiness -----------------------------------------------------------------------------
def test_metrics_count_what_was_served(server: Server, client: httpx.Client) -> None:
    ok_before = metric(client, "toolgym_steps_total", env_id=ENV, status="ok")
    timeout_before = metric(client, "toolgym_steps_total", env_id=ENV, status="timeout")
    started_before = metric(client, "toolgym_episodes_started_total", env_id=ENV)
    answered_before = metric(client, "toolgym_episodes_finished_total", env_id=ENV, reason="answered")
    not_found_before = metric(client, "toolgym_http_errors_total", code="episode_not_found")
    latency_before = metric(client, "toolgym_step_seconds_count", env_id=ENV)

    episode_id = reset(client, "tu-multi-1")["episode_id"]
    step(client, episode_id, MAKER)
    step(client, episode_id, FOUNDER)
    step(client, episode_id, "Imara Solberg")
    (task_id,) = register(client, tooluse_record({"slow": SLOW_SOURCE}, params={"slow": {"seconds": "number"}}))
    slow = reset(client, task_id, tool_timeout_s=0.5)["episode_id"]
    assert step(client, slow, tags(call("slow", seconds=5)))["info"]["status"] == "timeout"
    expect_error(client.get("/v1/episodes/ep-000000-missing"), 404, "episode_not_found")

    assert metric(client, "toolgym_steps_total", env_id=ENV, status="ok") == ok_before + 3
    assert metric(client, "toolgym_steps_total", env_id=ENV, status="timeout") == timeout_before + 1
    assert metric(client, "toolgym_episodes_started_total", env_id=ENV) == started_before + 2
    assert metric(client, "toolgym_episodes_finished_total", env_id=ENV, reason="answered") == answered_before + 1
    assert metric(client, "toolgym_http_errors_total", code="episode_not_found") == not_found_before + 1
    assert metric(client, "toolgym_step_seconds_count", env_id=ENV) == latency_before + 4
    assert metric(client, "toolgym_live_episodes") == server.manager.open_episodes
    text = client.get("/metrics").text
    for name in ("toolgym_steps_total", "toolgym_reset_seconds_bucket", "toolgym_episode_return_bucket",
                 "toolgym_warm_sandboxes", "toolgym_sandbox_failures_total", "toolgym_teardown_backlog",
                 "toolgym_store_commit_writes_bucket", "toolgym_store_backlog"):
        assert name in text, name
    close(client, slow)


def test_readyz_reports_docker_and_the_warm_pool(server: Server, client: httpx.Client) -> None:
    wait_until(lambda: server.manager.pool.ready == 1, 30, "the warm pool to fill")
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["accepting"] is True
    assert body["backend"] == {"name": "docker", "isolated": True}
    pool = body["warm_pool"]
    assert {k: pool[k] for k in ("ready", "size", "last_error", "max_size", "target")} == {
        "ready": 1, "size": 1, "last_error": None, "max_size": 1, "target": 1}
    assert pool["creating"] == 0 and pool["resets_per_s"] >= 0 and pool["create_s"] > 0
    wait_for_teardown(server)
    teardown = client.get("/readyz").json()["teardown"]
    assert teardown["backlog"] == 0 and teardown["failed"] == 0
    assert teardown["workers"] >= 1 and teardown["capacity"] >= 1 and teardown["removed"] >= 1
    assert body["open_episodes"] == server.manager.open_episodes
    assert body["max_live_episodes"] == server.settings.max_live_episodes
    assert metric(client, "toolgym_warm_sandboxes") == 1
    assert metric(client, "toolgym_warm_pool_target") == 1
