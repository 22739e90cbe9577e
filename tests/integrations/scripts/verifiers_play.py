"""Rollouts of ToolGym episodes through verifiers' v1 Environment, in the verifiers venv; prints one JSON report.

argv: base_url api_key plan_json. The plan is a list of runs ``{"name", "task_id", "replies",
"max_retries"}``, each one rollout of ``load_environment("toolgym/ToolUse-v0", ...)`` whose
policy is a scripted OpenAI-compatible server on loopback (scripted_model.py) answering with
``replies``. They share one process, since importing verifiers takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import verifiers.v1 as vf
from scripted_model import ScriptedModel
from verifiers.v1.env import RunSlot

from toolgym.integrations.verifiers import load_environment

BASE_URL, API_KEY, PLAN = sys.argv[1:4]


async def rollout(run: dict[str, Any]) -> dict[str, Any]:
    model = ScriptedModel(run["replies"])
    os.environ["SCRIPTED_MODEL_KEY"] = "unused"
    env = load_environment("toolgym/ToolUse-v0", base_url=BASE_URL, api_key=API_KEY, task_ids=[run["task_id"]],
                           max_retries=run["max_retries"])
    ctx = vf.ModelContext(model="scripted",
                          client=vf.EvalClientConfig(base_url=model.base_url, api_key_var="SCRIPTED_MODEL_KEY"))
    try:
        async with env.serving():
            [task] = list(env.taskset)
            episode = await env.run_slot(RunSlot(task), ctx)
    finally:
        model.close()
    [trace] = episode.traces
    return {
        "episode_ok": episode.ok,
        "episode_errors": [e.type for e in episode.errors],
        "ok": trace.ok,
        "stop_condition": trace.stop_condition,
        "errors": [{"type": e.type, "message": e.message} for e in trace.errors],
        "rewards": {name: r.score for name, r in trace.rewards.items()},
        "toolgym": trace.info.get("toolgym"),
        "runtime": trace.agent.runtime.type if trace.agent.runtime is not None else None,
        "harness": trace.agent.config.harness.id if trace.agent.config.harness is not None else None,
        "agent": trace.agent.name,
        "model_requests": [r.get("messages", []) for r in model.requests],
    }


async def main() -> dict[str, Any]:
    return {run["name"]: await rollout(run) for run in json.loads(PLAN)}


print(json.dumps(asyncio.run(main()), default=str))
