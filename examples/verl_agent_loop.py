"""Write verl's tool config for ToolGym and check it on one sample against a live server.

    pip install torch 'toolgym[verl]'
    toolgym serve &                       # or point TOOLGYM_BASE_URL / TOOLGYM_API_KEY at a server
    python examples/verl_agent_loop.py --out toolgym_tools.yaml --data toolgym_train.parquet

It writes the tool config (``tool_config``) and a parquet dataset of the split's tasks in verl's
format (``agent_name="toolgym_agent"``, the task in ``tools_kwargs``), then resets and finishes
one episode through ``ToolGymTool`` (the split's first task, or ``--task-id``; ``--answer`` is the
final answer it sends) to show the server answers and scores; the last line printed is a JSON
summary of that episode (its id, return and infrastructure error, if any). Train with verl's own entry point
(docs/trainers/verl.md):

    python -m verl.trainer.main_ppo data.train_files=toolgym_train.parquet \
        actor_rollout_ref.rollout.multi_turn.enable=True \
        actor_rollout_ref.rollout.multi_turn.tool_config_path=toolgym_tools.yaml \
        actor_rollout_ref.rollout.multi_turn.format=hermes ...
"""

from __future__ import annotations

import argparse
import asyncio
import json

import pandas as pd
import yaml

from toolgym.client import EnvClient
from toolgym.integrations.verl import AGENT_NAME, ToolGymTool, tool_config

ENV = "toolgym/ToolUse-v0"


async def check(tool: ToolGymTool, task_id: str, answer: str) -> None:
    """One episode through the tool: reset, a final answer, its return (``None`` if infrastructure failed)."""
    run = await tool.start({"env_id": ENV, "task_id": task_id})
    print(f"episode {run.episode_id}: {len(run.observation.get('tools') or [])} tools")
    await run.step(answer)
    await run.close()
    print(json.dumps({"task_id": task_id, "episode_id": run.episode_id, "return": run.episode_return,
                      "infra_error": run.infra_error}))


def main() -> None:
    """Write the tool config and the dataset, then check one episode."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=None, help="default: $TOOLGYM_BASE_URL, else http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None, help="default: $TOOLGYM_API_KEY (kept out of the YAML)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--out", default="toolgym_tools.yaml")
    parser.add_argument("--data", default="toolgym_train.parquet")
    parser.add_argument("--task-id", default=None, help="the checked episode's task (default: the split's first)")
    parser.add_argument("--answer", default="I do not know.", help="the final answer the check sends")
    args = parser.parse_args()

    config = tool_config(ENV, base_url=args.base_url)
    with open(args.out, "w") as f:
        yaml.safe_dump(config, f)
    with EnvClient(args.base_url, args.api_key) as client:
        tasks = client.tasks(ENV, split=args.split, limit=args.tasks)["tasks"]
    if not tasks:
        raise SystemExit(f"the server has no {args.split} tasks for {ENV}")
    rows = [{"data_source": "toolgym", "agent_name": AGENT_NAME, "prompt": [{"role": "user", "content": ""}],
             "extra_info": {"tools_kwargs": {"call_tool": {"create_kwargs": {"env_id": ENV, "task_id": t["id"]}}}}}
            for t in tasks]
    pd.DataFrame(rows).to_parquet(args.data)
    print(f"wrote {args.out} and {len(rows)} rows to {args.data}")

    tool_conf = config["tools"][0]
    tool = ToolGymTool({**tool_conf["config"], "api_key": args.api_key}, None)
    asyncio.run(check(tool, args.task_id or tasks[0]["id"], args.answer))


if __name__ == "__main__":
    main()
