"""``toolgym demo``: start a server, play real episodes of every env family, print rewards.

The policies are scripted, and the good ones are *oracles*: they read the gold from the
package's own task files (the server never reveals it), so they show what a correct policy
earns; the bad ones show what a wrong, malformed or void turn earns. Everything goes
through the real HTTP API and, where a Docker engine answers, real per-episode containers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register the ``demo`` subcommand and its options on the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="start a server and run real episodes of every env family with scripted policies")
    p.add_argument("--backend", choices=["auto", "docker", "process"], default="auto",
                   help="sandbox backend (default auto: docker if an engine answers, else process, which does"
                        " not isolate code from this host)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per episode on stdout (JSON Lines) instead of a table;"
                        " the notes go to stderr")
    p.set_defaults(run=run)


@dataclass
class EpisodeReport:
    env_id: str
    task_id: str
    policy: str
    rewards: list[float]
    reason: str
    notes: str


Policy = Callable[[dict[str, Any], int], Any]
"""(observation so far, turn) -> action."""


def _tooluse_policies(record: dict[str, Any]) -> dict[str, Policy]:
    turns = record["reference_solution"]

    def oracle(obs: dict[str, Any], turn: int) -> Any:
        if turn < len(turns):
            return "".join(
                f'<tool_call>\n{json.dumps(c, ensure_ascii=False)}\n</tool_call>' for c in turns[turn]
            )
        return f"The answer is {record['answer']}."

    def openai_form(obs: dict[str, Any], turn: int) -> Any:
        if turn < len(turns):
            return {"content": "", "tool_calls": [
                {"type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                for c in turns[turn]]}
        return f"{record['answer']}"

    def guesser(obs: dict[str, Any], turn: int) -> Any:
        return "I believe the answer is 42."

    def malformed(obs: dict[str, Any], turn: int) -> Any:
        return '<tool_call>{"name": broken json</tool_call>'

    return {"oracle (tags)": oracle, "oracle (OpenAI tool_calls)": openai_form,
            "answers at once, wrongly": guesser, "malformed call": malformed}


def _codemath_policies(record: dict[str, Any]) -> dict[str, Policy]:
    gold = record["answer"]

    def coder(obs: dict[str, Any], turn: int) -> Any:
        if turn == 0:
            return f"Let me compute it.\n```python\nanswer = {gold!r}\nprint('answer is', answer)\n```"
        return f"So the answer is \\boxed{{{gold}}}."

    def final_answer_tool(obs: dict[str, Any], turn: int) -> Any:
        return f"```python\nfinal_answer({gold!r})\n```"

    def wrong(obs: dict[str, Any], turn: int) -> Any:
        return "The answer is \\boxed{-123456789}."

    def void(obs: dict[str, Any], turn: int) -> Any:
        return "Hmm, let me think about this without code or a final answer."

    return {"code then \\boxed{}": coder, "final_answer() in code": final_answer_tool,
            "wrong \\boxed{}": wrong, "void turn": void}


def _functioncall_policies(record: dict[str, Any]) -> dict[str, Policy]:
    calls = record.get("gold_calls") or []

    def oracle(obs: dict[str, Any], turn: int) -> Any:
        if record.get("gold_text"):
            return "I can answer that directly, no tool is needed."
        return "".join(f"<tool_call>\n{json.dumps(c, ensure_ascii=False)}\n</tool_call>\n" for c in calls)

    def python_list(obs: dict[str, Any], turn: int) -> Any:
        if record.get("gold_text"):
            return "No tool call needed."
        def kwargs(a: dict[str, Any]) -> str:
            return ", ".join(f"{k}={v!r}" for k, v in a.items())

        return "[" + ", ".join(f"{c['name']}({kwargs(c['arguments'])})" for c in calls) + "]"

    def wrong(obs: dict[str, Any], turn: int) -> Any:
        return '<tool_call>\n{"name": "not_a_tool", "arguments": {}}\n</tool_call>'

    return {"oracle (tags)": oracle, "oracle (Python call list)": python_list, "wrong call": wrong}


def _pick(records: list[tuple[str, dict[str, Any]]], count: int, key: str | None = None) -> list[dict[str, Any]]:
    chosen: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for split, record in records:
        if split != "train":
            continue
        tag = record.get(key) if key else None
        if key and tag in seen:
            continue
        seen.add(tag)
        chosen.append(record)
        if len(chosen) == count:
            break
    return chosen


def _play(client: Any, env_id: str, record: dict[str, Any], name: str, policy: Policy) -> EpisodeReport:
    reset = client.reset(env_id, record["id"], seed=0)
    obs, rewards, turn = reset.observation, [], 0
    info: dict[str, Any] = {}
    while True:
        step = client.step(reset.episode_id, policy(obs, turn))
        rewards.append(step.reward)
        obs, info, turn = step.observation, step.info, turn + 1
        if step.terminated or step.truncated:
            break
    notes = []
    metrics = info.get("metrics") or {}
    if "solve_f1" in metrics:
        notes.append("solve P/R/F1 = {:.2f}/{:.2f}/{:.2f}".format(
            metrics["solve_precision"], metrics["solve_rate"], metrics["solve_f1"]))
    if info.get("void_turn"):
        notes.append("void_turn=True (mask from the loss)")
    if info.get("status") not in (None, "ok"):
        notes.append(f"status={info['status']}")
    return EpisodeReport(env_id, record["id"], name, rewards, str(info.get("reason")), "; ".join(notes))


def _start_server(backend_name: str, port: int) -> tuple[Any, Any, tempfile.TemporaryDirectory[str]]:
    from toolgym.server import Settings, create_app
    from toolgym.server.embedded import EmbeddedServer
    from toolgym.server.sandbox.select import select_backend

    tmp = tempfile.TemporaryDirectory(prefix="toolgym-demo-")
    settings = Settings(backend=backend_name, db_path=os.path.join(tmp.name, "demo.db"),  # type: ignore[arg-type]
                        instance_id=f"demo-{os.getpid()}", warm_pool_size=2)
    backend = select_backend(settings)
    server = EmbeddedServer(create_app(settings, backend=backend), port=port).start()
    return server, backend, tmp


_NOT_ISOLATED = "NOT isolated: code runs on this host with resource limits only"


def _choose_backend(asked: str, reachable: Callable[[], bool]) -> tuple[str | None, str]:
    """The backend to use and the sentence that says why, true to what happened.

    A backend the user named is "as asked", a fallback is called one. ``None`` when the named
    backend cannot run (the sentence then says why).
    """
    if asked == "process":
        return "process", f"using the process backend, as asked (--backend process; {_NOT_ISOLATED})"
    if reachable():
        how = "as asked (--backend docker)" if asked == "docker" else "a Docker engine answers"
        return "docker", f"using the docker backend, {how}: one container per episode"
    if asked == "docker":
        return None, ("--backend docker, but no Docker engine answers (start dockerd or set DOCKER_HOST;"
                      " or use --backend process)")
    return "process", f"no Docker engine answers; falling back on the process backend ({_NOT_ISOLATED})"


def run(args: argparse.Namespace) -> int:
    """Start a server, play the episodes and print them: a table, or JSON Lines with ``--json``.

    With ``--json`` stdout carries only the episodes, one JSON object a line, so it can be piped
    into ``jq`` or a file; every human note (backend, server address, timing) goes to stderr.
    """
    from toolgym.client import EnvClient
    from toolgym.envs import load_families
    from toolgym.server.sandbox.image import ensure_image
    from toolgym.server.sandbox.select import docker_reachable

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    notes = sys.stderr if args.json else sys.stdout

    def say(message: str) -> None:
        print(f"demo: {message}", file=notes, flush=True)

    backend_name, why = _choose_backend(args.backend, docker_reachable)
    if backend_name is None:
        print(f"toolgym demo: {why}", file=sys.stderr)
        return 1
    say(why)
    if backend_name == "docker":
        ensure_image("toolgym-sandbox:latest", say=say)
    server, backend, tmp = _start_server(backend_name, args.port)
    base_url = server.base_url
    say(f"server on {base_url}, sandbox backend {backend.name}")
    families = load_families()
    plan = [
        ("toolgym/ToolUse-v0", _pick(list(families["toolgym/ToolUse-v0"].builtin_records()), 4, "question_type"),
         _tooluse_policies),
        ("toolgym/CodeMath-v0", _pick(list(families["toolgym/CodeMath-v0"].builtin_records()), 2), _codemath_policies),
        ("toolgym/FunctionCall-v0", _pick(list(families["toolgym/FunctionCall-v0"].builtin_records()), 2),
         _functioncall_policies),
    ]
    reports: list[EpisodeReport] = []
    started = time.monotonic()
    try:
        with EnvClient(base_url) as client:
            for env_id, records, make_policies in plan:
                for i, record in enumerate(records):
                    policies = make_policies(record)
                    names = list(policies) if i == 0 else list(policies)[:1]
                    for name in names:
                        report = _play(client, env_id, record, name, policies[name])
                        reports.append(report)
                        if args.json:
                            print(json.dumps(report.__dict__), flush=True)
    finally:
        server.stop()
        left = backend.remove_owned(f"demo-{os.getpid()}") if backend.name == "docker" else 0
        backend.close()
        tmp.cleanup()
    if not args.json:
        _print_table(reports)
    say(f"{len(reports)} episodes in {time.monotonic() - started:.1f} s; "
        f"{'no container left behind' if not left else f'{left} leftover containers removed'}")
    return 0


def _print_table(reports: list[EpisodeReport]) -> None:
    rows = [("env", "task", "policy", "step rewards", "return", "stopped", "notes")]
    for r in reports:
        rows.append((r.env_id.split("/")[-1], r.task_id[:22], r.policy, " ".join(f"{x:+.2f}" for x in r.rewards),
                     f"{sum(r.rewards):+.2f}", r.reason, r.notes))
    widths = [min(max(len(row[i]) for row in rows), 40) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        # Every column but the last (the notes) is cut to its width; the notes are shown whole.
        cells = [cell[:w].ljust(w) for cell, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()
