"""Train a small model with TRL's GRPOTrainer on ToolGym's ToolUse episodes (against a live server).

    pip install torch 'toolgym[trl]'
    toolgym serve &                       # or point TOOLGYM_BASE_URL / TOOLGYM_API_KEY at a server
    python examples/trl_grpo.py --model Qwen/Qwen3-0.6B --steps 10

``--model`` is a hub id or a local directory holding a saved model and its tokenizer. Each dataset
row names a task; the rollouts are real episodes, the rewards ToolGym's, and a row hit by an
infrastructure fault is masked (docs/trainers/trl.md). The last line printed is a JSON summary:
the steps done and the mean ToolGym reward TRL logged at each step.
"""

from __future__ import annotations

import argparse
import json

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from toolgym.client import EnvClient
from toolgym.integrations.trl import environment_factory, reward

ENV = "toolgym/ToolUse-v0"


def main() -> None:
    """Train on the split's first tasks."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen3-0.6B", help="hub id or local model directory")
    parser.add_argument("--base-url", default=None, help="default: $TOOLGYM_BASE_URL, else http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None, help="default: $TOOLGYM_API_KEY")
    parser.add_argument("--split", default="train")
    parser.add_argument("--tasks", type=int, default=32, help="how many of the split's tasks to train on")
    parser.add_argument("--task-id", action="append", default=None, help="repeatable; replaces --split/--tasks")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="trl-toolgym")
    args = parser.parse_args()

    task_ids = args.task_id
    if not task_ids:
        with EnvClient(args.base_url, args.api_key) as client:
            task_ids = [t["id"] for t in client.tasks(ENV, split=args.split, limit=args.tasks)["tasks"]]
    rows = [{"prompt": [{"role": "user", "content": ""}], "task_id": t} for t in task_ids]
    if not rows:
        raise SystemExit(f"the server has no {args.split} tasks for {ENV}")

    cpu = not torch.cuda.is_available()  # bf16 needs a GPU; without one TRL must be told to train on the CPU
    trainer = GRPOTrainer(
        model=args.model,
        reward_funcs=reward,
        environment_factory=environment_factory(ENV, base_url=args.base_url, api_key=args.api_key, max_turns=8),
        train_dataset=Dataset.from_list(rows),
        args=GRPOConfig(output_dir=args.out, max_steps=args.steps, num_generations=4, per_device_train_batch_size=4,
                        max_completion_length=1024, max_tool_calling_iterations=8, logging_steps=1,
                        report_to="none", use_cpu=cpu, bf16=not cpu),
    )
    trainer.train()
    # TRL logs the mean reward of the step's scored rollouts; masked rollouts are left out of it.
    rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    print(json.dumps({"steps": trainer.state.global_step, "rewards": rewards}))


if __name__ == "__main__":
    main()
