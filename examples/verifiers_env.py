r"""Run ToolGym episodes as verifiers 0.4 rollouts (``verifiers.v1``), locally, and print their scores.

Needs ``pip install 'toolgym[verifiers]'``, a ToolGym server (``toolgym serve``) and any
OpenAI-compatible chat endpoint as the policy; the player's harness runs in a local subprocess
(verifiers fetches its chat program's dependencies with ``uv`` on first use)::

    python examples/verifiers_env.py --base-url http://127.0.0.1:8000 \
        --model-url http://127.0.0.1:8001/v1 --model Qwen/Qwen2.5-7B-Instruct \
        --env-id toolgym/ToolUse-v0 --task-id tu-multi-1 --task-id tu-single-1

A rollout the infrastructure broke shows verifiers' ``SandboxError`` instead of a reward
(docs/trainers/verifiers.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import verifiers.v1 as vf
from verifiers.v1.env import RunSlot

from toolgym.integrations.verifiers import load_environment


async def main() -> None:
    """Load the env and run one rollout per task, at most ``--concurrency`` at a time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("TOOLGYM_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--model-url", required=True, help="OpenAI-compatible API root, e.g. http://127.0.0.1:8001/v1")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-key-env", default="OPENAI_API_KEY", help="variable holding the model endpoint's key")
    parser.add_argument("--env-id", default="toolgym/ToolUse-v0")
    parser.add_argument("--task-id", action="append", default=None, help="repeatable; default: the split's tasks")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    env = load_environment(args.env_id, base_url=args.base_url, task_ids=args.task_id, split=args.split,
                           limit=args.limit)  # the ToolGym key comes from $TOOLGYM_API_KEY
    ctx = vf.ModelContext(model=args.model, client=vf.EvalClientConfig(base_url=args.model_url,
                                                                      api_key_var=args.model_key_env))
    gate = asyncio.Semaphore(args.concurrency)
    async with env.serving():
        episodes = await asyncio.gather(*(env.run_slot(RunSlot(task), ctx, gate) for task in env.taskset))
    for episode in episodes:
        for trace in episode.traces:
            name = trace.task.data.id
            if trace.ok:
                print(f"{name}: reward {trace.reward:g}, {trace.info.get('toolgym', {}).get('turns')} turn(s)")
            else:
                error = trace.last_error
                print(f"{name}: FAILED ({trace.stop_condition}: {error.message if error else '?'}), not scored")


if __name__ == "__main__":
    asyncio.run(main())
