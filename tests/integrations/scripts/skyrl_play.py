"""Plays ToolGym episodes through SkyRL-Gym's own registry, in the skyrl venv; prints one JSON report.

argv: base_url api_key dead_url. ``dead_url`` is a loopback port nothing listens on: the adapter
must turn the unreachable server into a masked end of trajectory, never an exception.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import skyrl_gym

from toolgym.integrations import skyrl as adapter

BASE_URL, API_KEY, DEAD_URL = sys.argv[1:4]


def tags(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def play(actions: list[str], extras: dict[str, Any], env_config: dict[str, Any] | None = None) -> dict[str, Any]:
    env = skyrl_gym.make("toolgym", env_config=env_config or {}, extras=extras)
    prompt, meta = env.init([{"role": "user", "content": "placeholder prompt from the dataset"}])
    steps = []
    for action in actions:
        out = env.step(action)
        steps.append({"reward": out["reward"], "done": out["done"], "observations": out["observations"],
                      "metadata": {k: v for k, v in out["metadata"].items() if k != "info"}})
        if out["done"]:
            break
    metrics = env.get_metrics()
    env.close()
    return {"prompt": prompt, "init_meta": {k: v for k, v in meta.items() if k != "info"}, "steps": steps,
            "metrics": metrics, "type": type(env).__mro__[1].__name__}


adapter.register(base_url=BASE_URL, api_key=API_KEY)
report: dict[str, Any] = {"registered": "toolgym" in skyrl_gym.registry}
report["multi"] = play(
    [tags("find_manufacturer", product="Halcyon drone"),
     tags("get_company", company="Brightwell Dynamics", field="founder"),
     "Imara Solberg"],
    {"env_id": "toolgym/ToolUse-v0", "task_id": "tu-multi-1", "max_turns": 6})
report["capped"] = play([tags("find_manufacturer", product="Halcyon drone"), "never sent"],
                        {"env_id": "toolgym/ToolUse-v0", "task_id": "tu-multi-1", "max_turns": 1})
adapter.register(base_url=DEAD_URL, api_key=API_KEY)  # re-registering replaces the spec
report["dead"] = play(["anything"], {"env_id": "toolgym/ToolUse-v0", "task_id": "tu-multi-1"}, {"max_retries": 0})
print(json.dumps(report))
