"""Faults against a real server: a sandbox killed mid-step, clients that hang up mid-request
(and requests cancelled mid-flight), a pool that cannot make sandboxes, and a full disk under
the store.

Each test breaks the real thing (kills the episode's Docker containers by label, closes the
TCP socket under a request, cancels the request's task in the server's own event loop,
removes the sandbox image's tag, fills a tmpfs under the SQLite file) and checks what
docs/architecture.md ("Faults") promises: a retryable 503 with ``Retry-After`` and never a
reward for an infrastructure fault, nothing acknowledged that is not stored, an episode that
stays addressable and consistent, no container left behind, and recovery without a restart.
The Docker engine restart is in test_chaos_engine.py (marker ``chaos``, scripts/slow-tests.sh):
it disturbs every other Docker test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import (
    LABEL_EPISODE,
    WITNESS_ACTION,
    Server,
    ServerFarm,
    call,
    check_healthy,
    close,
    count_containers,
    docker,
    expect_error,
    register,
    reset,
    state,
    step,
    tags,
    tooluse_record,
    wait_for_teardown,
)

SLOW_SOURCE = "import time\n\ndef slow(seconds):\n    time.sleep(float(seconds))\n    return 'slept'\n"


def slow_task(client: httpx.Client) -> str:
    """A ToolUse task with a ``slow(seconds)`` tool, to have a step in flight for as long as needed."""
    (task_id,) = register(client, tooluse_record({"slow": SLOW_SOURCE}, params={"slow": {"seconds": "string"}}))
    return task_id


def slow_action(seconds: float) -> str:
    return tags(call("slow", seconds=str(seconds)))


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


def assert_infra_error(response: httpx.Response) -> dict[str, Any]:
    """A sandbox fault as the API defines it: 503 ``sandbox_error``/``sandbox_timeout``, retryable,
    ``Retry-After``, and no reward anywhere in the body."""
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] in ("sandbox_error", "sandbox_timeout"), error
    assert error["retryable"] is True, error
    assert int(response.headers["Retry-After"]) >= 1
    assert "reward" not in response.text, response.text
    return dict(error)


def raw_request(server: Server, method: str, path: str, body: dict[str, Any]) -> socket.socket:
    """Send one HTTP request on a bare socket and return the socket unread (the caller hangs up)."""
    data = json.dumps(body).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    sock.sendall(head.encode() + data)
    return sock


# --- a sandbox killed mid-step ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(farm: ServerFarm) -> Server:
    return farm.start("docker", warm_pool_size=0)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def kill_loop(episode_id: str, stop: threading.Event, killed: list[str]) -> None:
    """Kill every running container labelled for ``episode_id`` until ``stop`` (bounded: 20 s).

    The manager's replacement sandbox carries the same episode label, so it dies too: the step
    cannot succeed on a retry and must come back as an infrastructure error.
    """
    deadline = time.monotonic() + 20.0
    with docker() as engine:
        while not stop.is_set() and time.monotonic() < deadline:
            for container in engine.containers.list(filters={"label": f"{LABEL_EPISODE}={episode_id}"}):
                try:
                    container.kill()
                    killed.append(container.id)
                except Exception:  # already dead or being removed: the next pass looks again
                    pass
            time.sleep(0.05)


@pytest.mark.docker
def test_a_sandbox_killed_mid_step_is_a_retryable_503_never_a_reward(server: Server, client: httpx.Client) -> None:
    task_id = slow_task(client)
    episode_id = reset(client, task_id)["episode_id"]
    first = step(client, episode_id, WITNESS_ACTION)  # turn 0 is on record before the fault
    assert first["reward"] == 0.0 and first["info"]["status"] == "ok"

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_loop, args=(episode_id, stop, killed), daemon=True)
    killer.start()
    try:
        started = time.monotonic()
        response = client.post(f"/v1/episodes/{episode_id}/step", json={"action": slow_action(3)})
        took = time.monotonic() - started
    finally:
        stop.set()
        killer.join(timeout=30)
    assert killed, "the fault was never injected"
    assert_infra_error(response)
    assert took < 15, f"the infra error took {took:.1f} s"

    # Nothing was recorded for the failed step: no reward 0, no turn, in memory or on disk.
    st = state(client, episode_id)
    assert st["status"] == "live" and st["turn"] == 1 and len(st["steps"]) == 1, st
    assert [s["turn"] for s in server.manager.store.steps(episode_id)] == [0]
    assert server.manager.store.get_episode(episode_id).turn == 1

    # Retrying the same step now works, on a new sandbox, as turn 1.
    again = client.post(f"/v1/episodes/{episode_id}/step", json={"action": slow_action(0.1), "expected_turn": 1})
    assert again.status_code == 200, again.text
    assert state(client, episode_id)["turn"] == 2
    running = [c for c in _episode_containers(episode_id) if c["State"] == "running"]
    assert len(running) == 1, "one live sandbox for the episode, the killed ones removed"
    close(client, episode_id)
    wait_for_teardown(server)
    wait_until(lambda: not _episode_containers(episode_id), 30, "the episode's containers to be removed")
    check_healthy(server, client)


def _episode_containers(episode_id: str) -> list[dict[str, Any]]:
    with docker() as engine:
        return list(engine.api.containers(all=True, filters={"label": f"{LABEL_EPISODE}={episode_id}"}))


# --- clients that hang up mid-request -------------------------------------------------------------
@pytest.mark.docker
def test_a_client_gone_mid_step_leaks_nothing_and_the_episode_stays_consistent(
    server: Server, client: httpx.Client,
) -> None:
    task_id = slow_task(client)
    episode_id = reset(client, task_id)["episode_id"]
    sock = raw_request(server, "POST", f"/v1/episodes/{episode_id}/step", {"action": slow_action(2)})
    time.sleep(0.5)  # the tool is running in the sandbox now
    sock.close()

    # The step's work ends (done or cancelled) within its own bound, not never.
    live = server.manager._live[episode_id]
    wait_until(lambda: not live.lock.locked(), 15, "the abandoned step to end")
    st = state(client, episode_id)
    assert st["status"] == "live" and st["turn"] in (0, 1), st
    stored = [s["turn"] for s in server.manager.store.steps(episode_id)]
    assert stored == list(range(st["turn"])), "memory and disk agree on what was played"
    # Still addressable: the next step plays at the turn the server reports.
    nxt = client.post(f"/v1/episodes/{episode_id}/step",
                      json={"action": slow_action(0.1), "expected_turn": st["turn"]})
    assert nxt.status_code == 200, nxt.text
    assert state(client, episode_id)["turn"] == st["turn"] + 1
    assert len(_episode_containers(episode_id)) == 1
    close(client, episode_id)
    wait_for_teardown(server)
    wait_until(lambda: count_containers(server.instance) == 0, 30, "no container left (warm pool is 0)")
    check_healthy(server, client)


@pytest.mark.docker
def test_a_step_cancelled_mid_flight_is_played_whole_or_not_at_all(server: Server, client: httpx.Client) -> None:
    """Uvicorn lets a request whose client left run on; a server stack that cancels it instead
    (another ASGI server, a middleware, a shutdown) must not cut a step between its env and
    its store write. The step's task is cancelled in the server's own event loop, mid-tool-call.
    With ``max_turns=2`` the env itself shows how many steps it has played: the next step is
    the last one exactly when the cancelled one counted."""
    import asyncio

    from toolgym.actions import action_from_wire
    from toolgym.server.auth import ANONYMOUS

    task_id = slow_task(client)
    episode_id = reset(client, task_id, max_turns=2)["episode_id"]
    manager = server.manager
    loop = manager._reaper.get_loop()
    pending = asyncio.run_coroutine_threadsafe(
        manager.step(ANONYMOUS, episode_id, action_from_wire(slow_action(1.5))), loop)
    time.sleep(0.5)  # the tool is running in the sandbox now
    pending.cancel()
    live = manager._live[episode_id]
    wait_until(lambda: not live.lock.locked(), 15, "the cancelled step to end")
    st = state(client, episode_id)
    stored = [s["turn"] for s in manager.store.steps(episode_id)]
    assert stored == list(range(st["turn"])), f"memory says turn {st['turn']}, the store holds {stored}"
    nxt = client.post(f"/v1/episodes/{episode_id}/step",
                      json={"action": slow_action(0.1), "expected_turn": st["turn"]})
    assert nxt.status_code == 200, nxt.text
    assert nxt.json()["truncated"] is (st["turn"] == 1), (
        f"the env has played a step the episode does not record (turn {st['turn']}): {nxt.text[:300]}")
    assert [s["turn"] for s in manager.store.steps(episode_id)] == list(range(st["turn"] + 1))
    close(client, episode_id)
    wait_for_teardown(server)


def check_abandoned_resets(server: Server, client: httpx.Client, what: str) -> None:
    """Once the abandoned resets end, each became an episode its owner can list (one container
    each, none orphaned) or left nothing; closing those leaves no container."""
    wait_until(lambda: not server.manager._starting, 30, what)
    wait_for_teardown(server)
    live = client.get("/v1/episodes", params={"status": "live"}).json()["episodes"]
    assert server.manager.open_episodes == len(live)
    assert count_containers(server.instance) == len(live), "a container for each episode, none orphaned"
    for episode in live:
        close(client, episode["episode_id"])
    wait_for_teardown(server)
    wait_until(lambda: count_containers(server.instance) == 0, 30, "no container left")


@pytest.mark.docker
def test_a_client_gone_mid_reset_leaves_no_orphan_sandbox(server: Server, client: httpx.Client) -> None:
    """With no warm pool, a reset makes its container (a quarter second and more): hang up during it."""
    assert server.manager.open_episodes == 0
    for _ in range(3):
        sock = raw_request(server, "POST", "/v1/episodes", {"env_id": "toolgym/ToolUse-v0", "task_id": "tu-single-1"})
        time.sleep(0.05)
        sock.close()
    # Each reset either became an episode (the client can find it in its list) or left nothing.
    check_abandoned_resets(server, client, "the abandoned resets to end")


@pytest.mark.docker
def test_a_reset_cancelled_mid_creation_leaves_no_orphan_sandbox(server: Server, client: httpx.Client) -> None:
    """As above, for a reset cancelled while its container is being made (no warm pool): it ends
    as an episode the owner can list and close, or as nothing; never as a container nobody holds."""
    import asyncio

    from toolgym.server.auth import ANONYMOUS

    manager = server.manager
    loop = manager._reaper.get_loop()
    assert manager.open_episodes == 0
    for _ in range(2):
        pending = asyncio.run_coroutine_threadsafe(
            manager.reset(ANONYMOUS, "toolgym/ToolUse-v0", "tu-single-1", None, None), loop)
        time.sleep(0.1)  # creating the container takes longer
        pending.cancel()
    check_abandoned_resets(server, client, "the cancelled resets to end")


# --- a pool that cannot make sandboxes ------------------------------------------------------------------
@pytest.mark.docker
def test_a_pool_that_cannot_make_sandboxes_answers_503_at_once_and_recovers(
    farm_fn: ServerFarm, sandbox_image: str,
) -> None:
    """The sandbox image's tag vanishes (as on a botched upgrade): creation fails, the warm pool
    starves. Resets get a prompt 503 with Retry-After, /readyz says not ready; once the tag is
    back, both recover without a restart."""
    tag = f"toolgym-sandbox:chaos-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "tag", sandbox_image, tag], check=True)
    try:
        server = farm_fn.start("docker", sandbox_image=tag, warm_pool_size=1)
        with server.client() as c:
            wait_until(lambda: server.manager.pool.ready == 1, 30, "the warm pool to fill")
            subprocess.run(["docker", "rmi", "--no-prune", tag], check=True, capture_output=True)
            took_warm = reset(c, "tu-single-1")["episode_id"]  # the warm one was made before: it still works
            for _ in range(3):
                started = time.monotonic()
                r = c.post("/v1/episodes", json={"env_id": "toolgym/ToolUse-v0", "task_id": "tu-single-1"})
                assert time.monotonic() - started < 5, "a starved pool must answer at once, not hang"
                assert_infra_error(r)
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "not_ready", ready.text
            assert "image" in ready.json()["backend"]["error"]
            assert server.manager.open_episodes == 1

            subprocess.run(["docker", "tag", sandbox_image, tag], check=True)
            wait_until(lambda: c.get("/readyz").status_code == 200, 15, "/readyz to recover")
            wait_until(lambda: server.manager.pool.ready == 1, 45, "the warm pool to refill")
            again = reset(c, "tu-single-1")["episode_id"]
            for episode_id in (took_warm, again):
                assert step(c, episode_id, WITNESS_ACTION)["info"]["status"] == "ok"
                close(c, episode_id)
            check_healthy(server, c)
    finally:
        subprocess.run(["docker", "rmi", "--no-prune", tag], check=False, capture_output=True)


# --- a full disk under the store ------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: a real file system that really fills up (root only; CI runs as root)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but the full-disk test needs root to mount a tmpfs")
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system says ENOSPC."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        for _ in range(64):  # bounded: 64 MiB is more than the tmpfs holds
            try:
                f.write(chunk)
            except OSError:
                return
    raise AssertionError("the disk never filled")


def test_a_full_disk_refuses_the_step_with_503_and_recovers(farm_fn: ServerFarm, small_disk: Path) -> None:
    """The step whose write fails is not acknowledged (503 + Retry-After) and not half-played:
    once space is back, the episode goes on from the last stored turn, and the server never
    restarted."""
    server = farm_fn.start("process", db_path=str(small_disk / "toolgym.db"), warm_pool_size=0)
    try:
        with server.client() as c:
            episode_id = reset(c, "tu-single-1")["episode_id"]
            assert step(c, episode_id, WITNESS_ACTION)["info"]["status"] == "ok"
            filler = small_disk / "filler"
            fill(filler)
            big = tags(call("get_city_info", city="Varnholt"), content="x" * 60000)
            failed = None
            for _ in range(8):  # the WAL may have room for a step or two: play until a write fails
                r = c.post(f"/v1/episodes/{episode_id}/step", json={"action": big})
                if r.status_code != 200:
                    failed = r
                    break
            assert failed is not None, "no write failed on a full disk"
            error = expect_error(failed, 503, "store_unavailable")
            assert error["retryable"] is True and int(failed.headers["Retry-After"]) >= 1
            assert "reward" not in failed.text
            acked = state(c, episode_id)["turn"]
            assert c.get("/healthz").status_code == 200
            # A direct store write (a task upload, far larger than what the failed step had room for).
            record = tooluse_record({}, question="q" * 300_000)
            upload = c.post("/v1/envs/toolgym/ToolUse-v0/tasks", json={"tasks": [record]})
            expect_error(upload, 503, "store_unavailable")
            assert c.get(f"/v1/envs/toolgym/ToolUse-v0/tasks/{record['id']}").status_code == 404

            filler.unlink()
            # The same step again, at the turn the server reports: played once, on a rebuilt episode.
            r = c.post(f"/v1/episodes/{episode_id}/step", json={"action": big, "expected_turn": acked})
            assert r.status_code == 200, r.text
            st = state(c, episode_id)
            assert st["turn"] == acked + 1 and st["status"] == "live", st
            assert [s["turn"] for s in server.manager.store.steps(episode_id)] == list(range(acked + 1))
            assert all(s["info"]["status"] == "ok" for s in st["steps"]), st["steps"]
            assert register(c, record) == [record["id"]], "the refused upload can be sent again"
            other = reset(c, "tu-single-1")["episode_id"]
            assert step(c, other, WITNESS_ACTION)["info"]["status"] == "ok"
            for done in (episode_id, other):
                close(c, done)
    finally:
        server.stop()
