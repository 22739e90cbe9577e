"""Fork (deterministic replay into a fresh sandbox) and generated task files, over real HTTP
with real Docker sandboxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolgym.envs.tooluse.builtin import builtin_tasks
from toolgym.taskgen import generate

pytestmark = pytest.mark.docker

ENV = "toolgym/ToolUse-v0"


def tags(calls: list[dict[str, Any]]) -> str:
    return "".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


def record(task_id: str) -> dict[str, Any]:
    return next(r for _, r in builtin_tasks() if r["id"] == task_id)


def test_fork_replays_and_the_next_step_earns_what_the_original_would(server_factory: Any) -> None:
    server = server_factory("docker", warm_pool_size=2)
    rec = record("tu-multi-2")  # three hops
    turns = rec["reference_solution"]
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        original = http.post("/v1/episodes", json={"env_id": ENV, "task_id": rec["id"], "seed": 7}).json()["episode_id"]
        first = http.post(f"/v1/episodes/{original}/step", json={"action": tags(turns[0])}).json()
        fork = http.post(f"/v1/episodes/{original}/fork", json={"turn": 1})
        assert fork.status_code == 201, fork.text
        child = fork.json()["episode_id"]
        assert child != original
        assert fork.json()["observation"] == first["observation"]  # the fork stands where the original stood
        state = http.get(f"/v1/episodes/{child}").json()
        assert state["turn"] == 1 and state["steps"][0]["reward"] == first["reward"]
        # The same next action earns the same reward and metrics in both.
        a = http.post(f"/v1/episodes/{original}/step", json={"action": tags(turns[1])}).json()
        b = http.post(f"/v1/episodes/{child}/step", json={"action": tags(turns[1])}).json()
        assert (a["reward"], a["info"]) == (b["reward"], b["info"])
        assert a["reward"] == 1.0
        for eid in (original, child):
            assert http.delete(f"/v1/episodes/{eid}").status_code == 204


def test_sixteen_alternatives_scored_from_one_prefix(server_factory: Any) -> None:
    """FTRL's preference training samples ~16 alternative turns from one saved prefix."""
    server = server_factory("docker", warm_pool_size=4)
    rec = record("tu-parallel-1")
    good = rec["reference_solution"][0]
    alternatives = [tags(good), tags(good[:1]), tags([{"name": "get_mountain", "arguments": {"name": "Nowhere"}}]),
                    "I think 3000 m and 2800 m."] * 4
    expected = [2 * 2 / 3, 2 * 1 / 2, 0.0, 0.0] * 4
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        root = http.post("/v1/episodes", json={"env_id": ENV, "task_id": rec["id"], "seed": 1}).json()["episode_id"]
        rewards = []
        for action in alternatives:
            child = http.post(f"/v1/episodes/{root}/fork", json={}).json()["episode_id"]
            rewards.append(http.post(f"/v1/episodes/{child}/step", json={"action": action}).json()["reward"])
            http.delete(f"/v1/episodes/{child}")
        assert rewards == pytest.approx(expected)
        http.delete(f"/v1/episodes/{root}")


def test_fork_refuses_bad_turns_and_other_owners(server_factory: Any) -> None:
    server = server_factory("docker", api_keys=("alice", "bob"))
    with httpx.Client(base_url=server.base_url, timeout=60, headers={"Authorization": "Bearer alice"}) as alice:
        eid = alice.post("/v1/episodes", json={"env_id": ENV, "task_id": "tu-single-1"}).json()["episode_id"]
        too_far = alice.post(f"/v1/episodes/{eid}/fork", json={"turn": 3})
        assert too_far.status_code == 422 and too_far.json()["error"]["code"] == "validation_failed"
        bob = httpx.post(f"{server.base_url}/v1/episodes/{eid}/fork", json={}, headers={"Authorization": "Bearer bob"})
        assert bob.status_code == 404 and bob.json()["error"]["code"] == "episode_not_found"
        alice.delete(f"/v1/episodes/{eid}")


def test_generated_task_file_loads_at_startup_and_its_references_solve(server_factory: Any, tmp_path: Path) -> None:
    records = list(generate(5, 12))
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    server = server_factory("docker", task_files=(f"{ENV}={path}",), warm_pool_size=2)
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        listed = {t["id"] for split in ("train", "validation", "test")
                  for t in http.get(f"/v1/envs/{ENV}/tasks", params={"split": split, "limit": 1000}).json()["tasks"]}
        assert {r["id"] for r in records} <= listed
        for rec in records[:6]:
            eid = http.post("/v1/episodes", json={"env_id": ENV, "task_id": rec["id"]}).json()["episode_id"]
            for turn in rec["reference_solution"]:
                http.post(f"/v1/episodes/{eid}/step", json={"action": tags(turn)})
            last = http.post(f"/v1/episodes/{eid}/step", json={"action": f"Answer: {rec['answer']}"}).json()
            assert last["terminated"], last
            assert last["info"]["metrics"]["solve_f1"] == 1.0, (rec["id"], last["info"])
        # The same file registered again over HTTP is a 409 naming a duplicate id.
        again = http.post(f"/v1/envs/{ENV}/tasks", content=path.read_bytes(),
                          headers={"Content-Type": "application/x-ndjson"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_task"
