"""TRL's GRPOTrainer trains on real ToolGym episodes through toolgym.integrations.trl.

A real ``GRPOTrainer`` run (2 optimizer steps on CPU, a tiny model built in the script) against a
real server with the Docker backend. Each step's batch holds two rollouts of each of three tasks:
one whose tool call finds the gold, one where it finds nothing and the turn limit cuts it (a real
0), and one whose sandbox is killed from outside on every attempt. The test checks that the rewards TRL logged are the
returns the server recorded, and that the killed rows were masked (``None``), not scored 0.

``examples/trl_grpo.py`` runs too, as a user would: the same tiny policy saved to a directory
(no hub here) is its ``--model``, one step against a live server, and the reward its summary
reports is the mean of the returns the server recorded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from trainer_kit import ARGUMENTS, ENV, EXAMPLES, TOOL, SandboxKiller, register_tasks, run_in_venv, run_with_config

pytestmark = pytest.mark.trainer
STEPS = 2


def test_the_trl_example_trains_on_toolgym_rewards(server_factory: Any, tmp_path: Path) -> None:
    """examples/trl_grpo.py as a user runs it: a local model directory, one step, a live server."""
    server = server_factory("process")
    tasks = register_tasks(server.base_url, f"trlx-{tmp_path.name[-12:]}")
    model_dir = tmp_path / "model"
    saved = run_with_config("trl", "trl_grpo_run.py", {"save_dir": str(model_dir), "tool": TOOL,
                                                       "arguments": ARGUMENTS}, tmp_path)
    assert saved == {"saved": str(model_dir)}
    out = run_in_venv("trl", EXAMPLES / "trl_grpo.py", "--model", str(model_dir), "--base-url", server.base_url,
                      "--task-id", tasks["solved"], "--task-id", tasks["solved"], "--steps", "1",
                      "--out", str(tmp_path / "out"), cwd=tmp_path, timeout_s=300)
    summary = json.loads(out.strip().splitlines()[-1])

    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        episodes = http.get("/v1/episodes", params={"limit": 500}).json()["episodes"]
    # One step: one prompt, four generations, each a real episode that called the tool.
    assert len(episodes) == 4 and {e["task_id"] for e in episodes} == {tasks["solved"]}, episodes
    assert all(e["status"] == "finished" and e["turn"] >= 2 for e in episodes), episodes
    returns = [e["total_reward"] for e in episodes]
    assert summary["steps"] == 1 and len(summary["rewards"]) == 1, summary
    assert math.isclose(summary["rewards"][0], sum(returns) / len(returns), rel_tol=1e-5), (summary, returns)
    assert summary["rewards"][0] > 0, "the found gold pays"


@pytest.mark.docker
def test_grpo_trainer_gets_toolgym_rewards_and_masks_a_killed_sandbox(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory("docker", warm_pool_size=2)
    tasks = register_tasks(server.base_url, f"trl-{tmp_path.name[-12:]}")
    config = {"base_url": server.base_url, "env_id": ENV, "task_ids": list(tasks.values()),
              # Per-row reset options: the unsolved task is cut after its one tool call, so it ends
              # with a real reward of 0 (no final answer), which must stay apart from the masked rows.
              "options": [{"max_turns": 20}, {"max_turns": 1}, {"max_turns": 20}], "max_steps": STEPS,
              "out_dir": str(tmp_path / "out"), "tool": TOOL, "arguments": ARGUMENTS, "max_retries": 1}
    with SandboxKiller(server.base_url, tasks["infra"]) as killer:
        out = run_with_config("trl", "trl_grpo_run.py", config, tmp_path)

    assert out["global_step"] == STEPS
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        recorded = {e["episode_id"]: e for e in http.get("/v1/episodes", params={"limit": 500}).json()["episodes"]}
    batches = out["rows"]
    assert len(batches) == STEPS and all(len(rows) == 6 for rows in batches), batches
    for rows in batches:
        by_task: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_task.setdefault(row["task_id"], []).append(row)
        assert {t: len(r) for t, r in by_task.items()} == {t: 2 for t in tasks.values()}, rows
        for row in by_task[tasks["solved"]] + by_task[tasks["unsolved"]]:
            assert row["infra_error"] is None and row["turns"] == (2 if row in by_task[tasks["solved"]] else 1), row
            episode = recorded[row["episode_id"]]
            assert episode["status"] == "finished" and row["return"] == episode["total_reward"], (row, episode)
        # ToolUse's own rewards: the found gold pays; the cut episode found nothing and scores 0.
        assert {r["return"] for r in by_task[tasks["solved"]]} == {0.5}, rows  # solve_f1 1.0, empty answer -0.5
        assert {r["return"] for r in by_task[tasks["unsolved"]]} == {0.0}, rows
        for row in by_task[tasks["infra"]]:
            assert row["return"] is None and "sandbox_error" in row["infra_error"], row
            assert row["episode_id"] in killer.killed

    step_logs = [log for log in out["logs"] if "rewards/reward/mean" in log]
    assert len(step_logs) == STEPS, out["logs"]
    for log, rows in zip(step_logs, batches, strict=True):
        scored = [r["return"] for r in rows if r["return"] is not None]
        assert len(scored) == 4
        # Masked rows are left out of TRL's mean; scored as 0 they would pull it to sum/6.
        assert math.isclose(log["rewards/reward/mean"], sum(scored) / len(scored), rel_tol=1e-5), (log, rows)
        assert not math.isclose(log["rewards/reward/mean"], sum(scored) / len(rows)), "the killed rows were scored"
        assert math.isclose(log["reward"], sum(scored) / len(scored), rel_tol=1e-5), (log, rows)
