"""Episodes of AgentBox (``agentbox-rl`` from PyPI), run by ``bench/peers.py`` inside AgentBox's
scratch virtualenv, never in ToolGym's.

AgentBox starts a fresh hardened container per rollout through its step-wise API
(``AgentBoxEnv``: ``reset(task)`` creates and seeds the container, ``step(text)`` runs the
``<tool_call>``s in it with ``docker exec``, ``close()`` removes it). No registry is reachable
here, so its sandboxes start from the image given (ToolGym's own sandbox image, already local:
``auto_pull`` and ``ensure_pytest`` off), labelled as every benchmark container is
(``toolgym.managed=1``, ``toolgym.instance=<id>``) so ``peers.py`` can check that none is left.

One episode = reset (a task with one seeded file) + one step (a ``read_file`` tool call) +
close, played by ``c`` workers (one ``AgentBoxEnv`` each) for each concurrency ``c``. One JSON
line on stdout: per concurrency, episodes/s and the latencies of reset, step and close.

Run: ``python _peer_agentbox_run.py --image IMAGE --instance bench-x --episodes 12 --concurrency 1,2``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from agentbox import Task, VerifierSpec
from agentbox.config import SandboxConfig
from agentbox.env.env import AgentBoxEnv

STEP = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>'


async def run(cfg: SandboxConfig, episodes: int, workers: int) -> dict[str, Any]:
    task = Task(task_id="bench", description="Read a.txt.", starter_files={"a.txt": "hello\n"},
                verifier=VerifierSpec(type="command", command="true"))
    lat: dict[str, list[float]] = {"reset": [], "step": [], "close": []}
    remaining = episodes
    errors: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        env = AgentBoxEnv(sandbox=cfg)
        while remaining > 0:
            remaining -= 1
            try:
                t = time.perf_counter()
                await env.reset(task)
                lat["reset"].append(time.perf_counter() - t)
                t = time.perf_counter()
                result = await env.step(STEP)
                lat["step"].append(time.perf_counter() - t)
                if "hello" not in json.dumps(result.messages):
                    raise RuntimeError(f"unexpected tool answer: {str(result.messages)[:200]}")
                t = time.perf_counter()
                await env.close()
                lat["close"].append(time.perf_counter() - t)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                await env.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    wall = time.perf_counter() - t0
    done = len(lat["close"])
    return {"workers": workers, "episodes": done, "wall_s": wall, "episodes_per_s": done / wall,
            "errors": errors, **lat}


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    cfg = SandboxConfig(image=a.image, auto_pull=False, ensure_pytest=False,
                        labels={"toolgym.managed": "1", "toolgym.instance": a.instance})
    await run(cfg, 1, 1)  # warm-up: AgentBox profiles the image once
    return {"runs": [await run(cfg, a.episodes, c) for c in (int(x) for x in a.concurrency.split(","))]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--image", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--concurrency", default="1,2")
    a = p.parse_args()
    print(json.dumps(asyncio.run(main_async(a))))


if __name__ == "__main__":
    main()
