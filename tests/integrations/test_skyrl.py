"""``toolgym.integrations.skyrl`` inside the real ``skyrl-gym`` (its own cached venv), against a real server.

The trainer side (scripts/skyrl_play.py) registers the env, makes it through
``skyrl_gym.make("toolgym", ...)`` and plays full episodes; an unreachable server must end a
trajectory masked (reward None, ``infra_error``), never raise: one exception in an env aborts
SkyRL's whole training step.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from scripts.scripted_model import ScriptedModel
from server_kit import call, tags
from trainer_kit import EXAMPLES, SandboxKiller, register_slow_task, run_in_venv, run_script

from toolgym.server.embedded import free_port

pytestmark = pytest.mark.trainer
KEY = "k-skyrl"


def test_skyrl_make_plays_full_episodes_and_masks_an_unreachable_server(server_factory: Any) -> None:
    server = server_factory("process", api_keys=(KEY,))
    report = run_script("skyrl", "skyrl_play.py", server.base_url, KEY, f"http://127.0.0.1:{free_port()}")
    assert report["registered"] is True

    multi = report["multi"]
    assert multi["type"] == "BaseTextEnv"
    system = multi["prompt"][0]
    assert system["role"] == "system" and "<tools>" in system["content"] and "find_manufacturer" in system["content"]
    assert multi["prompt"][-1]["role"] == "user" and "Halcyon" in multi["prompt"][-1]["content"]
    assert multi["init_meta"]["infra_error"] is False and multi["init_meta"]["episode_id"]
    first, second, final = multi["steps"]
    assert (first["reward"], first["done"]) == (1.0, False)
    assert first["observations"][0]["role"] == "tool" and "Brightwell Dynamics" in first["observations"][0]["content"]
    assert (second["reward"], second["done"]) == (1.0, False)
    assert "Imara Solberg" in second["observations"][0]["content"]
    assert final["done"] is True and final["reward"] == 1.0 and final["metadata"]["terminated"] is True
    assert all(s["metadata"]["infra_error"] is False for s in multi["steps"])
    assert multi["metrics"] == {"infra_error": 0.0, "turns": 3, "total_reward": 3.0}

    capped = report["capped"]
    [cut] = capped["steps"]  # SkyRL's max_turns reached: done, though ToolGym's episode was not over
    assert (cut["reward"], cut["done"], cut["metadata"]["terminated"]) == (1.0, True, False)

    dead = report["dead"]
    assert dead["init_meta"]["infra_error"] is True and "reset failed" in dead["init_meta"]["error"]
    assert dead["prompt"] == [{"role": "user", "content": "placeholder prompt from the dataset"}]
    [masked] = dead["steps"]
    assert masked["reward"] is None and masked["done"] is True and masked["observations"] == []
    assert masked["metadata"]["infra_error"] is True
    assert dead["metrics"]["infra_error"] == 1.0

    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        assert client.get("/v1/episodes", params={"status": "live"}).json()["total"] == 0, "every episode closed"



def test_the_skyrl_example_runs(server_factory: Any) -> None:
    server = server_factory("process", api_keys=(KEY,))
    model = ScriptedModel([tags(call("find_manufacturer", product="Halcyon drone")),
                           tags(call("get_company", company="Brightwell Dynamics", field="founder")), "Imara Solberg"])
    try:
        out = run_in_venv("skyrl", EXAMPLES / "skyrl_env.py", "--base-url", server.base_url,
                          "--model-url", model.base_url, "--model", "scripted", "--task-id", "tu-multi-1",
                          env={"TOOLGYM_API_KEY": KEY, "OPENAI_API_KEY": "unused"})
    finally:
        model.close()
    assert out.strip() == "tu-multi-1: 3 turn(s), rewards [1.0, 1.0, 1.0]", out
    assert [m["role"] for m in model.requests[-1]["messages"]] == ["system", "user", "assistant", "tool", "assistant",
                                                                   "tool"]


@pytest.mark.docker
def test_a_sandbox_killed_mid_episode_ends_the_trajectory_masked(server_factory: Any) -> None:
    server = server_factory("docker", api_keys=(KEY,), warm_pool_size=1)
    slow_id = register_slow_task(server.base_url, KEY)
    with SandboxKiller(server.base_url, slow_id, key=KEY, after_turn=1) as killer:
        report = run_script("skyrl", "skyrl_killed.py", server.base_url, KEY, slow_id)
    assert killer.episode_id is not None and killer.kills >= 2, "the sandbox and its replacement were killed"
    played, masked = report["steps"]
    assert (played["reward"], played["done"], played["metadata"]["infra_error"]) == (0.0, False, False)
    assert masked["reward"] is None and masked["done"] is True and masked["observations"] == []
    assert masked["metadata"]["infra_error"] is True
    assert "step 1 failed: SandboxError" in masked["metadata"]["error"], masked
    assert report["infra_error"] is True and report["metrics"]["infra_error"] == 1.0
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        state = client.get(f"/v1/episodes/{killer.episode_id}").json()
        assert state["status"] == "finished" and state["reason"] == "closed" and state["turn"] == 1, state
