"""One SkyRL-Gym trajectory whose sandbox the test kills mid-episode, in the skyrl venv; prints a JSON report.

argv: base_url api_key task_id. The task's ``slow`` tool runs for seconds: the first step (an
``echo`` call) is played, and the test kills the episode's containers during the second.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import skyrl_gym

from toolgym.integrations import skyrl as adapter

BASE_URL, API_KEY, TASK_ID = sys.argv[1:4]


def tags(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


adapter.register(base_url=BASE_URL, api_key=API_KEY)
env = skyrl_gym.make("toolgym", env_config={"max_retries": 0},
                     extras={"env_id": "toolgym/ToolUse-v0", "task_id": TASK_ID, "max_turns": 6})
_, meta = env.init([])
steps = []
for action in (tags("echo", text="warming up"), tags("slow", seconds=4), "SLOW-GOLD-42"):
    out = env.step(action)
    steps.append({"reward": out["reward"], "done": out["done"], "observations": out["observations"],
                  "metadata": {k: v for k, v in out["metadata"].items() if k != "info"}})
    if out["done"]:
        break
report = {"init_meta": {k: v for k, v in meta.items() if k != "info"}, "steps": steps, "metrics": env.get_metrics(),
          "infra_error": env.infra_error}
env.close()
print(json.dumps(report))
