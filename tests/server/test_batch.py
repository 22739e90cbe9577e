"""Batch routes over real HTTP with Docker sandboxes: one result per item, in order, each with
the status it would have had alone; one bad item never fails the others."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from toolgym.client import AsyncEnvClient, EnvClient, ResetResult, StepResult
from toolgym.envs.tooluse.builtin import builtin_tasks
from toolgym.errors import EnvNotFound, EpisodeFinished, EpisodeNotFound, TaskNotFound

pytestmark = pytest.mark.docker

ENV = "toolgym/ToolUse-v0"
TASKS = {r["id"]: r for _, r in builtin_tasks()}


def tags(calls: list[dict[str, Any]]) -> str:
    return "".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


def test_batch_reset_and_step_with_bad_items_mixed_in(server_factory: Any) -> None:
    server = server_factory("docker", warm_pool_size=3)
    ids = ["tu-single-1", "tu-parallel-1", "tu-multi-1"]
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        body = {"resets": [{"env_id": ENV, "task_id": t} for t in ids]
                + [{"env_id": "toolgym/ToolUse-v9"}, {"env_id": ENV, "task_id": "no-such-task"}]}
        res = http.post("/v1/batch/reset", json=body)
        assert res.status_code == 200, res.text
        results = res.json()["results"]
        assert [r["ok"] for r in results] == [True, True, True, False, False]
        assert [r["status"] for r in results] == [201, 201, 201, 404, 404]
        assert results[3]["error"]["code"] == "env_not_found" and "ToolUse-v0" in results[3]["error"]["message"]
        assert results[4]["error"]["code"] == "task_not_found"
        episodes = [r["result"]["episode_id"] for r in results[:3]]
        assert len(set(episodes)) == 3

        steps = [{"episode_id": e, "action": tags(TASKS[t]["reference_solution"][0])}
                 for e, t in zip(episodes, ids, strict=True)]
        steps.append({"episode_id": "ep-nope", "action": "x"})
        res = http.post("/v1/batch/step", json={"steps": steps}).json()["results"]
        assert [r["ok"] for r in res] == [True, True, True, False]
        assert res[3]["status"] == 404 and res[3]["error"]["code"] == "episode_not_found"
        # Each item's reward is what a single step earns (FTRL solve_f1 = 2k/(n+1)).
        assert [r["result"]["reward"] for r in res[:3]] == pytest.approx([1.0, 4 / 3, 1.0])
        # Every episode advanced exactly once.
        assert [http.get(f"/v1/episodes/{e}").json()["turn"] for e in episodes] == [1, 1, 1]
        for e in episodes:
            http.delete(f"/v1/episodes/{e}")


def test_batch_step_refuses_an_episode_twice_and_bad_bodies(server_factory: Any) -> None:
    server = server_factory("docker")
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        eid = http.post("/v1/episodes", json={"env_id": ENV, "task_id": "tu-single-1"}).json()["episode_id"]
        twice = http.post("/v1/batch/step", json={"steps": [{"episode_id": eid, "action": "a"},
                                                            {"episode_id": eid, "action": "b"}]})
        assert twice.status_code == 422 and twice.json()["error"]["details"]["episode_id"] == eid
        assert http.get(f"/v1/episodes/{eid}").json()["turn"] == 0  # nothing ran
        assert http.post("/v1/batch/step", json={"steps": []}).status_code == 422
        assert http.post("/v1/batch/reset", json={"resets": [{"env": ENV}]}).status_code == 422
        http.delete(f"/v1/episodes/{eid}")


def test_clients_batch_methods_return_results_or_typed_errors(server_factory: Any) -> None:
    server = server_factory("docker", warm_pool_size=2)
    with EnvClient(server.base_url) as client:
        out = client.batch_reset([{"env_id": ENV, "task_id": "tu-single-1", "seed": 3},
                                  {"env_id": "toolgym/tooluse-v0"}])
        assert isinstance(out[0], ResetResult)
        assert isinstance(out[1], EnvNotFound) and out[1].suggestion == ENV
        eid = out[0].episode_id
        call = tags(TASKS["tu-single-1"]["reference_solution"][0])
        items = [{"episode_id": eid, "action": call, "idempotency_key": "k1"}]
        first = client.batch_step(items)
        again = client.batch_step(items)  # the same key: the stored result, not a second call
        assert isinstance(first[0], StepResult) and first[0].reward == 1.0
        assert again[0] == first[0]
        assert client.episode(eid)["turn"] == 1
        final = client.batch_step([{"episode_id": eid, "action": "It is 48210."}])
        assert isinstance(final[0], StepResult) and final[0].terminated
        after = client.batch_step([{"episode_id": eid, "action": "more"}, {"episode_id": "ep-x", "action": "y"}])
        assert isinstance(after[0], EpisodeFinished) and isinstance(after[1], EpisodeNotFound)


async def test_async_client_batches(server_factory: Any) -> None:
    server = server_factory("docker", warm_pool_size=2)
    async with AsyncEnvClient(server.base_url) as client:
        out = await client.batch_reset([{"env_id": ENV, "task_id": t} for t in ("tu-single-1", "nope")])
        assert isinstance(out[0], ResetResult) and isinstance(out[1], TaskNotFound)
        steps = await client.batch_step([{"episode_id": out[0].episode_id, "action": "I do not know."}])
        assert isinstance(steps[0], StepResult) and steps[0].terminated and steps[0].reward == 0.0
