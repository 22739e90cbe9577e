r"""Play ToolGym episodes through SkyRL-Gym's registry, the way SkyRL's generator drives an env.

Needs ``pip install 'toolgym[skyrl]'``, a ToolGym server (``toolgym serve``) and any
OpenAI-compatible chat endpoint as the policy (vLLM, SGLang, an API)::

    python examples/skyrl_env.py --base-url http://127.0.0.1:8000 \
        --model-url http://127.0.0.1:8001/v1 --model Qwen/Qwen2.5-7B-Instruct \
        --env-id toolgym/ToolUse-v0 --task-id tu-multi-1

In training, SkyRL's generator does this loop itself: ``init`` gives the prompt, each generated
turn goes to ``step`` as raw text, and a trajectory whose env reports ``infra_error`` is masked
(docs/trainers/skyrl.md).
"""

from __future__ import annotations

import argparse
import os

import skyrl_gym

from toolgym.chat import ChatEndpoint, SyncChat
from toolgym.integrations.skyrl import register


def main() -> None:
    """Register the env, then play one episode per ``--task-id`` with the model at ``--model-url``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("TOOLGYM_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--model-url", required=True, help="OpenAI-compatible API root, e.g. http://127.0.0.1:8001/v1")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-key-env", default="OPENAI_API_KEY", help="variable holding the model endpoint's key")
    parser.add_argument("--env-id", default="toolgym/ToolUse-v0")
    parser.add_argument("--task-id", action="append", default=None, help="repeatable; default: a drawn task")
    parser.add_argument("--max-turns", type=int, default=8)
    args = parser.parse_args()

    register(base_url=args.base_url)  # the key comes from $TOOLGYM_API_KEY
    with SyncChat(ChatEndpoint.from_env(args.model_url, args.model_key_env)) as chat:
        for task_id in args.task_id or [None]:
            env = skyrl_gym.make("toolgym", env_config={}, extras={
                "env_id": args.env_id, "task_id": task_id, "max_turns": args.max_turns})
            history, _ = env.init([])
            rewards: list[float | None] = []
            done, metadata = False, {}
            while not done:
                reply = chat.complete({"model": args.model, "messages": history}).content or ""
                out = env.step(reply)
                rewards.append(out["reward"])
                done, metadata = out["done"], out["metadata"]
                history += [{"role": "assistant", "content": reply}, *out["observations"]]
            env.close()
            verdict = f"MASKED ({metadata.get('error')})" if metadata.get("infra_error") else f"rewards {rewards}"
            print(f"{task_id or 'drawn task'}: {len(rewards)} turn(s), {verdict}")


if __name__ == "__main__":
    main()
