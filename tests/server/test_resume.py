"""A live episode survives ``kill -9``: the restarted server rebuilds it by replay and it goes on.

Real ``toolgym serve`` processes on loopback, a real SQLite file, the process backend (quick) and
the docker backend (real containers). Each test plays a ToolUse and a CodeMath episode for two
steps (with ``Idempotency-Key`` headers), finishes another, kills the server with SIGKILL and
starts a new one on the same database. Then: the next step continues each episode at turn 3 with
the right reward; a retried pre-crash step gets its recorded answer; the finished episode stays
finished; an episode whose code printed random numbers cannot be replayed and says so (409,
``replay_diverged``, not retryable). With Docker, no container of the killed server is left.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_kit import ServeProcess
from server_kit import call, tags, tooluse_record

TOOLUSE = "toolgym/ToolUse-v0"
CODEMATH = "toolgym/CodeMath-v0"
MAKER = '<tool_call>{"name": "find_manufacturer", "arguments": {"product": "Halcyon drone"}}</tool_call>'
FOUNDER = ('<tool_call>{"name": "get_company", "arguments": {"company": "Brightwell Dynamics",'
           ' "field": "founder"}}</tool_call>')
BITS_TASK = "count_bits-train-000"
BITS_CODE = "Let me count.\n```python\nprint(bin(1984577275).count('1'))\n```"
RANDOM_CODE = "Let me roll.\n```python\nimport random\nprint(random.random())\n```"
READY_S = 180.0
ROLL_SOURCE = "import random\ndef roll():\n    return str(random.random())\n"
"""A tool that is not deterministic: its output differs on every call."""


def serve(tmp: Path, backend: str, instance: str, image: str | None = None) -> ServeProcess:
    """A ready server on the test's database (``resume.db``) under ``instance``, no warm pool."""
    env = {"TOOLGYM_INSTANCE_ID": instance, **({"TOOLGYM_SANDBOX_IMAGE": image} if image else {})}
    server = ServeProcess(tmp, "--backend", backend, "--warm-pool", "0", "--db", str(tmp / "resume.db"),
                          env=env, log_level="info")
    return server.wait_ready(READY_S)


def new(client: httpx.Client, env_id: str, task_id: str, **options: Any) -> str:
    body: dict[str, Any] = {"env_id": env_id, "task_id": task_id}
    if options:
        body["options"] = options
    r = client.post("/v1/episodes", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["episode_id"])


def play(client: httpx.Client, episode_id: str, action: str, key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    r = client.post(f"/v1/episodes/{episode_id}/step", json={"action": action}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


class Before:
    """What the first server acknowledged before it was killed."""

    def __init__(self, client: httpx.Client) -> None:
        self.tooluse = new(client, TOOLUSE, "tu-multi-1")
        self.codemath = new(client, CODEMATH, BITS_TASK)
        self.finished = new(client, CODEMATH, BITS_TASK)
        self.random = new(client, CODEMATH, BITS_TASK)
        self.closed = new(client, CODEMATH, BITS_TASK)
        r = client.post(f"/v1/envs/{TOOLUSE}/tasks", json={"tasks": [tooluse_record({"roll": ROLL_SOURCE})]})
        assert r.status_code == 201, r.text
        self.dice = new(client, TOOLUSE, r.json()["ids"][0])
        self.answers: dict[str, dict[str, Any]] = {}
        for turn, action in enumerate((MAKER, FOUNDER)):
            self.answers[f"tu-{turn}"] = play(client, self.tooluse, action, f"tu-{turn}")
        for turn in range(2):
            self.answers[f"cm-{turn}"] = play(client, self.codemath, BITS_CODE, f"cm-{turn}")
        done = play(client, self.finished, "So \\boxed{20}.")
        assert done["terminated"] and done["reward"] == 1.0
        self.answers["random"] = play(client, self.random, RANDOM_CODE)
        play(client, self.closed, BITS_CODE)
        rolled = play(client, self.dice, tags(call("roll")))
        assert rolled["info"]["status"] == "ok", rolled
        assert self.answers["tu-1"]["reward"] == pytest.approx(1.0)
        assert "20" in self.answers["cm-1"]["observation"]["messages"][0]["content"]
        self.acknowledged = 2 + 2 + 1 + 1 + 1 + 1


def check_resumed(client: httpx.Client, before: Before) -> int:
    """The checks after a restart; returns how many acknowledged steps came back."""
    # Before its next step, a crashed run's episode reads as live from the store; closing it
    # needs no rebuild.
    st = client.get(f"/v1/episodes/{before.closed}").json()
    assert st["status"] == "live" and st["turn"] == 1, st
    assert client.delete(f"/v1/episodes/{before.closed}").status_code == 204
    st = client.get(f"/v1/episodes/{before.closed}").json()
    assert st["status"] == "finished" and st["reason"] == "closed", st
    r = client.post(f"/v1/episodes/{before.closed}/step", json={"action": BITS_CODE})
    assert r.status_code == 409 and r.json()["error"]["code"] == "episode_finished", r.text
    # An idempotent retry of the last pre-crash step gets the recorded answer (and rebuilds the episode).
    for key, episode_id, action in (("tu-1", before.tooluse, FOUNDER), ("cm-1", before.codemath, BITS_CODE)):
        again = play(client, episode_id, action, key)
        assert again == before.answers[key], key
    # The next step continues each episode at its third turn, with the right reward.
    answered = play(client, before.tooluse, "Imara Solberg")
    assert answered["terminated"] and answered["reward"] == 1.0, answered
    st = client.get(f"/v1/episodes/{before.tooluse}").json()
    assert st["turn"] == 3 and st["status"] == "finished" and st["total_reward"] == pytest.approx(3.0), st
    third = play(client, before.codemath, "Once more.\n```python\nprint(2 + 2)\n```")
    assert not third["terminated"] and third["reward"] == 0.0
    assert "4" in third["observation"]["messages"][0]["content"]
    st = client.get(f"/v1/episodes/{before.codemath}").json()
    assert st["turn"] == 3 and st["status"] == "live", st
    # A finished episode stays finished.
    r = client.post(f"/v1/episodes/{before.finished}/step", json={"action": "x"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "episode_finished", r.text
    # Code that printed a random number cannot be replayed: a clear, final error, never another trajectory.
    r = client.post(f"/v1/episodes/{before.random}/step", json={"action": "So \\boxed{20}."})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "episode_finished" and error["retryable"] is False, error
    assert "replay_diverged" in error["message"] and "observation" in error["message"], error
    st = client.get(f"/v1/episodes/{before.random}").json()
    assert st["status"] == "interrupted" and st["reason"].startswith("replay_diverged"), st
    assert st["turn"] == 1
    # So does a tool whose output is random.
    r = client.post(f"/v1/episodes/{before.dice}/step", json={"action": tags(call("roll"))})
    assert r.status_code == 409 and r.json()["error"]["retryable"] is False, r.text
    assert "replay_diverged: turn 0 gave a different" in r.json()["error"]["message"], r.text
    assert client.get(f"/v1/episodes/{before.dice}").json()["status"] == "interrupted"
    # Recovered by replay: ToolUse 2 + CodeMath 2. Refused: the random code's 1 and the dice tool's
    # 1. The finished episode's step and the closed one's are kept as stored, not replayed.
    return 4


def test_process_backend_episodes_resume_after_kill_9(tmp_path: Path) -> None:
    instance = f"resume-{uuid.uuid4().hex[:6]}"
    first = serve(tmp_path, "process", instance)
    try:
        with first.client() as client:
            before = Before(client)
    finally:
        first.kill9()
    second = serve(tmp_path, "process", instance)  # same instance id, same db
    try:
        with second.client() as client:
            recovered = check_resumed(client, before)
    finally:
        second.stop()
    assert second.log().count("resumed at turn 2 (2 steps replayed") == 2, second.log()
    assert second.log().count("cannot be resumed") == 2, second.log()
    print(f"process backend: {before.acknowledged} steps acknowledged, {recovered} recovered by replay,"
          " 2 episodes resumed, 2 refused (not deterministic)")


def _containers(instance: str) -> dict[str, str]:
    """Container id -> episode label, of one instance."""
    from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED, docker_client

    client = docker_client()
    try:
        labels = [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance}"]
        found = client.api.containers(all=True, filters={"label": labels})
    finally:
        client.close()
    return {c["Id"]: c["Labels"].get("toolgym.episode", "") for c in found}


@pytest.mark.docker
def test_docker_episodes_resume_after_kill_9_and_leave_no_container(tmp_path: Path, sandbox_image: str) -> None:
    from toolgym.server.sandbox.docker import DockerBackend

    instance, other = f"resume-{uuid.uuid4().hex[:6]}", f"resume-{uuid.uuid4().hex[:6]}"
    servers: list[ServeProcess] = []
    try:
        servers.append(serve(tmp_path, "docker", instance, sandbox_image))
        with servers[-1].client() as client:
            before = Before(client)
        old = _containers(instance)
        assert before.codemath in old.values() and before.tooluse in old.values(), old
        servers[-1].kill9()

        # Restart with the SAME instance id: its leftovers go at start-up, the episodes come back.
        servers.append(serve(tmp_path, "docker", instance, sandbox_image))
        assert not set(old) & set(_containers(instance)), "a container of the killed server is left"
        with servers[-1].client() as client:
            recovered = check_resumed(client, before)
        print(f"docker backend: {before.acknowledged} steps acknowledged, {recovered} recovered by replay,"
              " 2 episodes resumed, 2 refused (not deterministic)")
        again = _containers(instance)
        assert before.codemath in again.values()
        servers[-1].kill9()

        # Restart with a NEW instance id after that one died: the sweep removes the dead one's
        # containers, and the episode is resumed a second time (its fourth turn answers).
        servers.append(serve(tmp_path, "docker", other, sandbox_image))
        assert not _containers(instance), "the dead instance's containers were not swept"
        with servers[-1].client() as client:
            last = play(client, before.codemath, "So \\boxed{20}.")
            assert last["terminated"] and last["reward"] == 1.0, last
            st = client.get(f"/v1/episodes/{before.codemath}").json()
            assert st["turn"] == 4 and st["status"] == "finished", st
        servers[-1].stop()
        assert not _containers(other)
    finally:
        for server in servers:
            server.kill9()
        backend = DockerBackend(image=sandbox_image, instance="cleanup")
        try:
            for name in (instance, other):
                backend.remove_owned(name)
        finally:
            backend.close()



def test_the_reaper_interrupts_a_crashed_runs_episode_nobody_came_back_for(farm_fn: Any, tmp_path: Path) -> None:
    """A crashed run's live episode that nobody resumes is marked interrupted once idle past
    ``idle_timeout_s`` (not kept live forever); one this server holds is not."""
    from toolgym.server.store import open_store

    db = str(tmp_path / "reaped.db")
    server = farm_fn.start("process", db_path=db, warm_pool_size=0, idle_timeout_s=2.0, reaper_interval_s=0.2)
    store = open_store(db)  # the crashed run's write, on its own connection
    try:
        store.add_episode(episode_id="ep-dead00-orphan", owner="anonymous", env_id=CODEMATH, task_id=BITS_TASK,
                          split="train", seed=None, options={"split": "train"},
                          reset_result={"observation": {}, "info": {}})
    finally:
        store.close()
    with server.client() as client:
        held = new(client, "toolgym/FunctionCall-v0", "fc-weather-001")
        deadline = time.monotonic() + 60
        while client.get("/v1/episodes/ep-dead00-orphan").json()["status"] == "live":
            assert time.monotonic() < deadline, "the orphan was not interrupted in 60 s"
            time.sleep(0.2)
        st = client.get("/v1/episodes/ep-dead00-orphan").json()
        assert st["status"] == "interrupted", st
        # The server's own idle episode is closed by the reaper as before (finished, idle_timeout).
        while client.get(f"/v1/episodes/{held}").json()["status"] == "live":
            assert time.monotonic() < deadline, "the held episode was not reaped in 60 s"
            time.sleep(0.2)
        st = client.get(f"/v1/episodes/{held}").json()
        assert st["status"] == "finished" and st["reason"] == "idle_timeout", st
