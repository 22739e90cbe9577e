"""``toolgym.integrations.verifiers`` inside the real ``verifiers`` 0.4 (its own cached venv), against a real server.

The trainer side (scripts/verifiers_play.py) runs rollouts through the v1 Environment that
``load_environment`` returns, with its player in a local subprocess runtime and a scripted
OpenAI-compatible server on loopback as the policy. One rollout plays a ToolUse episode to its
end and must carry ToolGym's rewards; in the other, this test kills the episode's sandbox
container (Docker backend) mid-episode, again and again until the server gives up on the step:
the rollout must end on verifiers' error channel (a ``SandboxError`` on the trace), unscored.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from scripts.scripted_model import ScriptedModel
from server_kit import call, tags
from trainer_kit import EXAMPLES, SandboxKiller, register_slow_task, run_in_venv, run_script

pytestmark = pytest.mark.trainer
KEY = "k-verifiers"
@pytest.mark.docker
def test_verifiers_rollouts_carry_toolgym_rewards_and_a_killed_sandbox_is_a_sandbox_error(
        server_factory: Any) -> None:
    server = server_factory("docker", api_keys=(KEY,), warm_pool_size=1)
    slow_id = register_slow_task(server.base_url, KEY)
    plan = [
        {"name": "played", "task_id": "tu-multi-1", "max_retries": 5, "replies": [
            tags(call("find_manufacturer", product="Halcyon drone")),
            tags(call("get_company", company="Brightwell Dynamics", field="founder")),
            "Imara Solberg"]},
        {"name": "killed", "task_id": slow_id, "max_retries": 0, "replies": [
            tags(call("echo", text="warming up")), tags(call("slow", seconds=4)), "SLOW-GOLD-42"]},
    ]
    with SandboxKiller(server.base_url, slow_id, key=KEY, after_turn=1) as killer:
        report = run_script("verifiers", "verifiers_play.py", server.base_url, KEY, json.dumps(plan), timeout_s=900)

    played = report["played"]
    assert (played["runtime"], played["harness"], played["agent"]) == ("subprocess", "null", "player")
    assert played["ok"] is True and played["episode_ok"] is True and played["errors"] == []
    assert played["rewards"] == {"toolgym_reward": 3.0}  # two tool calls with gold and the right answer
    assert played["toolgym"]["turns"] == 3 and played["toolgym"]["reason"] == "answered"
    first, second, third = played["model_requests"]
    system = first[0]["content"]
    assert first[0]["role"] == "system" and "<tools>" in system and "find_manufacturer" in system
    assert first[1] == {"role": "user", "content": "Who founded the company that makes the Halcyon drone?"}
    assert second[-1] == {"role": "user", "content": "<tool_response>\nBrightwell Dynamics\n</tool_response>"}
    assert third[-1] == {"role": "user", "content": "<tool_response>\nImara Solberg\n</tool_response>"}

    killed = report["killed"]
    assert killer.episode_id is not None and killer.kills >= 2, "the sandbox and its replacement were killed"
    assert killed["ok"] is False and killed["episode_ok"] is False
    assert killed["stop_condition"] == "sandbox_error"
    assert killed["episode_errors"] == ["SandboxError"]
    [error] = killed["errors"]
    assert error["type"] == "SandboxError" and "ToolGym step 1" in error["message"], error
    assert "SandboxError" in error["message"] and killer.episode_id in error["message"], error
    assert killed["rewards"] == {}, "an infrastructure failure is never scored"
    assert killed["toolgym"]["turns"] == 1, "only the step before the kill was played"
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        state = client.get(f"/v1/episodes/{killer.episode_id}").json()
        assert state["status"] == "finished" and state["reason"] == "closed" and state["turn"] == 1, state


def test_the_verifiers_example_runs(server_factory: Any) -> None:
    server = server_factory("process", api_keys=(KEY,))
    model = ScriptedModel([tags(call("find_manufacturer", product="Halcyon drone")),
                           tags(call("get_company", company="Brightwell Dynamics", field="founder")), "Imara Solberg"])
    try:
        out = run_in_venv("verifiers", EXAMPLES / "verifiers_env.py", "--base-url", server.base_url,
                          "--model-url", model.base_url, "--model", "scripted", "--task-id", "tu-multi-1",
                          env={"TOOLGYM_API_KEY": KEY, "OPENAI_API_KEY": "unused"}, timeout_s=600)
    finally:
        model.close()
    assert out.strip().splitlines()[-1] == "tu-multi-1: reward 3, 3 turn(s)", out
    assert len(model.requests) == 3
