"""verl's agent loop and tool classes run ToolGym episodes through toolgym.integrations.verl.

verl's own ``initialize_tools_from_config`` loads the tool from the YAML ``tool_config`` makes,
its registry and hydra instantiate the ``toolgym_agent`` loop as verl's ``AgentLoopWorker`` does,
and only the LLM server is scripted (token ids of a tokenizer built in the script). The env side
is real: a server with the Docker backend, and one sample whose sandbox is killed from outside on
every attempt. Five samples run at once in one worker (they share the tool, as in verl); the last
goes through verl's stock ``tool_agent`` loop.

``examples/verl_agent_loop.py`` runs in the verl venv against a live server: its YAML and parquet
are checked, and the return it prints is the one the server recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from trainer_kit import ARGUMENTS, ENV, EXAMPLES, TOOL, SandboxKiller, register_tasks, run_in_venv, run_with_config

pytestmark = pytest.mark.trainer

CALL = "<tool_call>\n" + json.dumps({"name": "call_tool", "arguments": {"name": TOOL, "arguments": ARGUMENTS}}) + \
    "\n</tool_call><|im_end|>"
KEYS = {"toolgym_episode_id", "toolgym_return", "toolgym_masked", "toolgym_infra_error"}


@pytest.mark.docker
def test_toolgym_agent_loop_reward_and_mask(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory("docker", warm_pool_size=2)
    tasks = register_tasks(server.base_url, f"verl-{tmp_path.name[-12:]}")
    samples = [
        {"task_id": tasks["solved"], "script": [CALL, "GOLD-A-42<|im_end|>"]},
        {"task_id": tasks["solved"], "script": ["GOLD-A-42<|im_end|>"]},  # answers without a tool
        {"task_id": tasks["unsolved"], "script": [CALL, "no idea<|im_end|>"]},
        {"task_id": tasks["infra"], "script": [CALL, "GOLD-C-9<|im_end|>"]},
        # verl's stock loop: it creates and releases the tool around each of the two calls, and
        # both must land in one episode (found again by its id); nobody finishes that episode.
        {"task_id": tasks["unsolved"], "script": [CALL, CALL, "done<|im_end|>"], "agent_name": "tool_agent"},
    ]
    config = {"base_url": server.base_url, "env_id": ENV, "samples": samples, "max_retries": 1,
              "tool_config_path": str(tmp_path / "tools.yaml")}
    with SandboxKiller(server.base_url, tasks["infra"]) as killer:
        out = run_with_config("verl", "verl_agent_loop_run.py", config, tmp_path)

    assert out["tool_names"] == ["call_tool"]
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        recorded = {e["episode_id"]: e for e in http.get("/v1/episodes", params={"limit": 100}).json()["episodes"]}
    solved_call, solved_direct, unsolved, infra, stock = out["samples"]
    for sample in out["samples"][:4]:
        assert set(sample["extra_fields"]) == KEYS, "every sample carries the same keys"
        assert "lookup" in sample["prompts"][0], "the task's tools are listed in the prompt"
        assert "rm_scores" in sample["as_dict_keys"]
    for sample in (solved_call, solved_direct, unsolved):
        fields = sample["extra_fields"]
        episode = recorded[fields["toolgym_episode_id"]]
        assert episode["status"] == "finished", episode
        assert fields["toolgym_masked"] == 0 and fields["toolgym_infra_error"] == ""
        assert sample["reward_score"] == fields["toolgym_return"] == episode["total_reward"], (sample, episode)
        assert sample["mask_sum"] > 0
    assert "GOLD-A-42" in solved_call["prompts"][1], "the tool's output reached the model"
    assert solved_call["tool_rewards"] == [1.0] and solved_direct["tool_rewards"] == []
    assert solved_call["reward_score"] > unsolved["reward_score"]
    assert recorded[solved_call["extra_fields"]["toolgym_episode_id"]]["turn"] == 2
    assert recorded[solved_direct["extra_fields"]["toolgym_episode_id"]]["turn"] == 1

    fields = infra["extra_fields"]
    assert fields["toolgym_masked"] == 1 and "sandbox_error" in fields["toolgym_infra_error"], infra
    assert fields["toolgym_return"] is None and infra["reward_score"] == 0.0, "0.0 is only verl's placeholder"
    assert infra["mask_sum"] == 0 and infra["response_len"] > 0, "no token of a masked sample is trained on"
    assert fields["toolgym_episode_id"] in killer.killed
    assert "infrastructure failure" in infra["prompts"][1]

    assert stock["tool_rewards"] == [0.0, 0.0] and not stock["extra_fields"]
    (left,) = [e for e in recorded.values() if e["task_id"] == tasks["unsolved"] and e["status"] == "live"]
    assert left["turn"] == 2, "both calls stepped the one episode"


def test_the_verl_example_writes_its_config_and_data_and_gets_a_toolgym_reward(server_factory: Any,
                                                                                 tmp_path: Path) -> None:
    """examples/verl_agent_loop.py as a user runs it against a live server with an API key."""
    key = "k-verl-example"
    server = server_factory("process", api_keys=(key,))
    tools, data = tmp_path / "tools.yaml", tmp_path / "train.parquet"
    out = run_in_venv("verl", EXAMPLES / "verl_agent_loop.py", "--base-url", server.base_url, "--api-key", key,
                      "--tasks", "3", "--out", str(tools), "--data", str(data), "--task-id", "tu-multi-1",
                      "--answer", "Imara Solberg", cwd=tmp_path)
    summary = json.loads(out.strip().splitlines()[-1])

    assert key not in tools.read_text(), "the key stays out of the YAML"
    [tool] = yaml.safe_load(tools.read_text())["tools"]
    assert tool["config"]["base_url"] == server.base_url and tool["config"]["env_id"] == ENV
    rows = pq.read_table(data).to_pylist()
    assert len(rows) == 3 and {r["agent_name"] for r in rows} == {"toolgym_agent"}
    assert rows[0]["extra_info"]["tools_kwargs"]["call_tool"]["create_kwargs"]["env_id"] == ENV

    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        episode = http.get(f"/v1/episodes/{summary['episode_id']}").json()
    assert summary["task_id"] == episode["task_id"] == "tu-multi-1" and summary["infra_error"] is None
    assert episode["status"] == "finished" and summary["return"] == episode["total_reward"], (summary, episode)
    assert summary["return"] > 0, "the gold answer pays"
