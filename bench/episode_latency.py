"""Per-request latency of an episode over HTTP: reset, steps of each env family, close.

A real ToolGym server runs in a thread of this process on a free 127.0.0.1 port (as
``tests/conftest.py`` starts one), with the Docker backend and then the process backend, each
with the warm pool on (``warm_pool_size=2``) and off (``0``: every reset waits for a sandbox to
start). The client is the project's own ``EnvClient`` (httpx, keep-alive), one request at a
time, so each figure is what a trainer's blocking call sees end to end.

Per configuration, ``--episodes`` episodes of each kind, one after another:

- ToolUse (``tu-single-1``): reset, ``--steps`` steps of one ``<tool_call>`` to the built-in
  ``get_city_info`` tool (one sandbox run each); then every other episode is closed live (its
  sandbox is destroyed by the close) and the others send the final answer (a step that ends
  the episode, whose sandbox the server releases before answering) and are then closed;
- CodeMath (the first built-in train task): reset, ``--steps`` steps with a small ```python
  block (one sandbox run each, no ``\\boxed{}`` so no verification), close;
- FunctionCall (``fc-weather-001``): reset, one step with the gold call (parsed and verified in
  the server, no sandbox; the episode ends), close of the finished episode.

With the warm pool on, the benchmark waits (untimed) until the pool is full, plus ``--settle``
seconds, before each reset and again before the steps, so a reset finds a warm sandbox and the
steps do not compete with a container being created. Sustained load, where the pool drains, is ``bench/throughput.py``.

Run: ``.venv/bin/python bench/episode_latency.py [--episodes 40] [--steps 3] [--backends docker,process]``
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import defaultdict

from _common import (
    CODEMATH,
    CODEMATH_ACTION,
    FUNCTIONCALL,
    FUNCTIONCALL_ACTION,
    FUNCTIONCALL_TASK,
    LATENCY_HEADERS,
    TOOL_ACTION,
    TOOLUSE,
    TOOLUSE_TASK,
    InProcessServer,
    docker_problem,
    latency_row,
    print_footer,
    print_header,
    ratio,
    summarize,
    table,
    timed,
)

WARM = 2


def measure(backend: str, warm_pool: int, episodes: int, steps: int, settle_s: float,
            tmp: str, channel: str = "auto") -> tuple[dict[str, list[float]], int, list[str]]:
    from toolgym.client import EnvClient

    samples: dict[str, list[float]] = defaultdict(list)
    problems: list[str] = []
    with InProcessServer(backend, tmp, f"lat-{backend}-{warm_pool}", warm_pool_size=warm_pool,
                         reaper_interval_s=5.0, sandbox_channel=channel) as srv, EnvClient(srv.base_url) as client:
        codemath_task = client.tasks(CODEMATH, split="train", limit=1)["tasks"][0]["id"]
        from toolgym.envs.tooluse.builtin import builtin_tasks

        answer = next(r["answer"] for _, r in builtin_tasks() if r["id"] == TOOLUSE_TASK)
        final_answer = f"The answer is {answer}."

        def quiet() -> None:
            """Untimed: the warm pool full again, then ``settle_s`` for the new container's
            start-up work (dockerd, the agent's own start) to finish."""
            if srv.wait_pool_full() > 0:
                time.sleep(settle_s)

        def episode(env_id: str, task_id: str, action: str, n_steps: int, record: bool, tag: str,
                    final: str | None = None) -> None:
            quiet()
            t, reset = timed(lambda: client.reset(env_id, task_id, seed=0))
            if record:
                samples[f"reset {tag}"].append(t)
            quiet()
            for _ in range(n_steps):
                t, step = timed(lambda: client.step(reset.episode_id, action))
                if record:
                    samples[f"step {tag}"].append(t)
                status = step.info.get("status")
                if status != "ok" and len(problems) < 5:
                    problems.append(f"{tag} step: status={status} info={step.info}")
            live = True
            if final is not None:
                t, step = timed(lambda: client.step(reset.episode_id, final))
                if record:
                    samples[f"final {tag}"].append(t)
                live = not step.terminated
                if live and len(problems) < 5:
                    problems.append(f"{tag} final answer did not end the episode: {step.info}")
            t, _ = timed(lambda: client.close(reset.episode_id))
            if record:
                samples[f"close {tag}" if live else f"close-finished {tag}"].append(t)

        # Warm-up (untimed): first requests import and start things (math-verify workers, ...).
        for record, count in ((False, 2), (True, episodes)):
            for i in range(count):  # every other episode ends with its final answer, the rest are closed live
                episode(TOOLUSE, TOOLUSE_TASK, TOOL_ACTION, steps, record, "ToolUse", final_answer if i % 2 else None)
            for _ in range(count):
                episode(CODEMATH, codemath_task, CODEMATH_ACTION, steps, record, "CodeMath")
            for _ in range(count):
                episode(FUNCTIONCALL, FUNCTIONCALL_TASK, FUNCTIONCALL_ACTION, 1, record, "FunctionCall")
        # A check that the steps did what they claim (one tool result, the code's output).
        r = client.reset(TOOLUSE, TOOLUSE_TASK, seed=0)
        out = client.step(r.episode_id, TOOL_ACTION).observation["messages"][0]["content"]
        client.close(r.episode_id)
        if "48210" not in out:
            problems.append(f"ToolUse step output unexpected: {out[:200]!r}")
        r = client.reset(CODEMATH, codemath_task, seed=0)
        out = client.step(r.episode_id, CODEMATH_ACTION).observation["messages"][0]["content"]
        client.close(r.episode_id)
        if "328350" not in out:
            problems.append(f"CodeMath step output unexpected: {out[:200]!r}")
    return samples, srv.leftover, problems


ROWS = [
    ("reset ToolUse", "reset ToolUse-v0 (builtin task)"),
    ("step ToolUse", "step ToolUse: one <tool_call>"),
    ("final ToolUse", "step ToolUse: final answer (ends it)"),
    ("close ToolUse", "close ToolUse (live: sandbox removed)"),
    ("close-finished ToolUse", "close ToolUse (already finished)"),
    ("reset CodeMath", "reset CodeMath-v0"),
    ("step CodeMath", "step CodeMath: small code block"),
    ("close CodeMath", "close CodeMath (live: sandbox removed)"),
    ("reset FunctionCall", "reset FunctionCall-v0 (no sandbox)"),
    ("step FunctionCall", "step FunctionCall (no sandbox)"),
    ("close FunctionCall", "close FunctionCall (already finished)"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=40, help="measured episodes per env family and config")
    parser.add_argument("--steps", type=int, default=3, help="tool/code steps per ToolUse and CodeMath episode (<=4)")
    parser.add_argument("--backends", default="docker,process")
    parser.add_argument("--channel", default="auto", choices=["auto", "attach", "socket"],
                        help="the docker backend's channel to its agents (setting sandbox_channel)")
    parser.add_argument("--settle", type=float, default=0.25,
                        help="untimed pause after the warm pool refilled, before the next timed request")
    args = parser.parse_args()
    if not 1 <= args.steps <= 4:
        parser.error("--steps must be 1..4 (CodeMath's train episodes end at turn 5)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "docker" in backends and (why := docker_problem()) is not None:
        print(f"skipping the docker backend: {why}")
        backends.remove("docker")
    print_header("ToolGym episode latency over HTTP (in-process server, EnvClient, sequential)", {
        "episodes": args.episodes, "steps/episode": args.steps, "backends": ",".join(backends),
        "warm_pool_size": f"{WARM} and 0", "settle_s": args.settle, "sandbox_channel": args.channel,
        "client": "toolgym.client.EnvClient (httpx keep-alive)",
    })
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    leaks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        for backend in backends:
            for pool in (WARM, 0):
                samples, leftover, problems = measure(backend, pool, args.episodes, args.steps, args.settle, tmp,
                                                           args.channel)
                results[(backend, pool)] = samples
                if leftover:
                    leaks.append(f"{backend}/pool={pool}: {leftover} container(s) left (removed)")
                title = f"{backend} backend, warm_pool_size={pool}" + (" (cold resets)" if pool == 0 else "")
                table(LATENCY_HEADERS, [latency_row(label, samples.get(key, [])) for key, label in ROWS], title)
                for p in problems:
                    print(f"  PROBLEM: {p}")

    def p50(backend: str, pool: int, key: str) -> float:
        return summarize(results.get((backend, pool), {}).get(key, []))["p50"]

    rows: list[list[str]] = []
    for backend in backends:
        a, b = p50(backend, WARM, "final ToolUse"), p50(backend, WARM, "step ToolUse")
        rows.append([f"{backend}: ToolUse final-answer step / tool step (p50)", f"{a * 1e3:.1f} / {b * 1e3:.1f} ms",
                     ratio(a, b)])
        for env in ("ToolUse", "CodeMath"):
            cold, warm = p50(backend, 0, f"reset {env}"), p50(backend, WARM, f"reset {env}")
            rows.append([f"{backend}: reset {env} cold / warm (p50)", f"{cold * 1e3:.1f} / {warm * 1e3:.1f} ms",
                         ratio(cold, warm)])
    if "docker" in backends and "process" in backends:
        for key in ("reset ToolUse", "step ToolUse", "final ToolUse", "step CodeMath", "step FunctionCall",
                    "close ToolUse"):
            d, p = p50("docker", WARM, key), p50("process", WARM, key)
            rows.append([f"{key}: docker / process (p50, warm pool)", f"{d * 1e3:.1f} / {p * 1e3:.1f} ms", ratio(d, p)])
    table(["ratio (same run)", "values", "ratio"], rows, "Ratios")
    print("\ncontainers left behind: " + ("; ".join(leaks) if leaks else "none (checked by label per server)"))
    print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
