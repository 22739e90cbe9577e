r"""``toolgym eval``: run a policy over a split's tasks via the HTTP API, print Solve-P/R/F1 per question type.

The metrics are FTRL's; the policies and the table live in ``toolgym.eval``.

    toolgym eval --base-url http://127.0.0.1:8000 --env toolgym/ToolUse-v0 --split test \
        --tasks tasks.jsonl --policy reference --out trajectories.jsonl

With ``--tasks``, the file's tasks are registered first (ids the server already has are
skipped) and exactly the file's tasks of ``--split`` are evaluated; without it, every task the
server lists in the split. Exit status: 0 when every episode ran, 1 when some failed (they
are counted under ``errors``, not scored), 2 on a usage error, 3 when no server answers at
``--base-url`` (default: ``$TOOLGYM_BASE_URL``, else ``http://127.0.0.1:8000``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import IO, Any

from toolgym.client import AsyncEnvClient
from toolgym.envs.base import SPLITS
from toolgym.errors import ToolGymError


def add_parser(subparsers: Any) -> None:
    """Register the ``eval`` subcommand; its ``--help`` shows this module's docstring."""
    p = subparsers.add_parser(
        "eval", help="evaluate a policy on a split: Solve-P/R/F1 per question type",
        description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base-url", default=None,
                   help="the ToolGym server (default: $TOOLGYM_BASE_URL, else http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="the server's API key (default: $TOOLGYM_API_KEY)")
    p.add_argument("--env", default="toolgym/ToolUse-v0", help="env id (default: %(default)s)")
    p.add_argument("--split", default="test", choices=SPLITS, help="which split (default: %(default)s)")
    p.add_argument("--tasks", metavar="FILE", help="a JSONL task file: registered first, and its tasks of the split"
                   " are the ones evaluated (the reference policy reads its gold from here)")
    p.add_argument("--policy", default="model", choices=("model", "reference", "random"),
                   help="model: an OpenAI-compatible endpoint; reference: the file's reference_solution and"
                   " answer (the ceiling); random: random calls or nonsense (the floor). Default: %(default)s")
    p.add_argument("--model-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8001/v1"
                   " (key: $TOOLGYM_MODEL_API_KEY)")
    p.add_argument("--model", help="the model name sent to --model-url")
    p.add_argument("--temperature", type=float, default=0.0, help="model sampling temperature (default: 0)")
    p.add_argument("--max-tokens", type=int, default=None, help="max_tokens per model reply")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N tasks only")
    p.add_argument("--concurrency", type=int, default=8, metavar="C", help="episodes at once (default: %(default)s)")
    p.add_argument("--out", metavar="FILE", help="write one JSON line per episode (trajectory, rewards, metrics)")
    p.add_argument("--seed", type=int, default=0, help="seeds resets and the random policy (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="write the summary (one row per question type) as one JSON document instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"toolgym eval: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Check the options that argparse cannot, then evaluate; returns the exit status the module docstring lists."""
    if args.policy == "model" and not (args.model_url and args.model):
        return _fail("--policy model needs --model-url and --model")
    if args.policy == "reference" and not args.tasks:
        return _fail("--policy reference needs --tasks: the server never reveals gold, so the reference"
                     " solutions come from the task file")
    if args.concurrency < 1 or (args.limit is not None and args.limit < 0):
        return _fail("--concurrency must be >= 1 and --limit >= 0")
    try:
        return asyncio.run(_run(args))
    except ToolGymError as exc:  # e.g. no server at --base-url: exit 3 with how to start one
        from toolgym.client._core import resolve_base_url
        from toolgym.commands._cli import error_exit

        return error_exit("eval", exc, resolve_base_url(args.base_url), as_json=args.json)


async def _run(args: argparse.Namespace) -> int:
    from toolgym import eval as ev

    records: list[dict[str, Any]] = []
    if args.tasks:
        try:
            records = ev.load_task_file(args.tasks)
        except (OSError, ValueError) as exc:
            return _fail(str(exc))
    async with AsyncEnvClient(args.base_url, args.api_key, max_connections=max(16, 2 * args.concurrency)) as client:
        envs = {e["id"]: e for e in await client.envs()}
        if args.env not in envs:
            return _fail(f"the server has no env {args.env!r}; it has {sorted(envs)}")
        max_turns = int(envs[args.env].get("options", {}).get("max_turns", {}).get("default", 20))
        try:
            tasks = await ev.select_tasks(client, args.env, args.split, records if args.tasks else None,
                                          say=lambda text: print(text, file=sys.stderr))
        except ValueError as exc:
            return _fail(str(exc))
        if args.limit is not None:
            tasks = tasks[: args.limit]
        if not tasks:
            return _fail(f"no {args.split} tasks to evaluate" + (f" in {args.tasks}" if args.tasks else ""))
        try:
            out: IO[str] | None = open(args.out, "w", encoding="utf-8") if args.out else None
        except OSError as exc:
            return _fail(f"cannot write --out: {exc}")
        policy: Any
        if args.policy == "reference":
            missing = ev.ReferencePolicy.missing(tasks)
            if missing:
                return _fail(f"{len(missing)} task(s) have no reference_solution/answer, e.g. {missing[0]!r}")
            policy = ev.ReferencePolicy()
        elif args.policy == "random":
            policy = ev.RandomPolicy()
        else:
            policy = ev.ModelPolicy(args.model_url, args.model, os.environ.get("TOOLGYM_MODEL_API_KEY"),
                                    temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
        from toolgym.commands._cli import Progress, show_progress

        bar = Progress(len(tasks), f"{args.policy} on {args.split}", "ep", disable=not show_progress(args))
        started = time.perf_counter()
        tally = {"scored": 0, "f1": 0.0, "errors": 0}

        def done(result: ev.EpisodeResult) -> None:
            if out is not None:
                out.write(json.dumps(result.to_json(policy.name), ensure_ascii=False) + "\n")
                out.flush()
            if result.error is None:
                tally["scored"] += 1
                tally["f1"] += float(result.metrics.get("solve_f1", 0.0))
            else:
                tally["errors"] += 1
            bar.update(1, f1=f"{tally['f1'] / max(1, tally['scored']):.3f}", errors=tally["errors"])

        try:
            results = await ev.evaluate(client, args.env, tasks, policy, concurrency=args.concurrency,
                                        seed=args.seed, max_turns=max_turns, on_result=done)
        finally:
            bar.close()
            if out is not None:
                out.close()
            if isinstance(policy, ev.ModelPolicy):
                await policy.aclose()
    elapsed = time.perf_counter() - started
    errors = [r for r in results if r.error is not None]
    if args.json:
        from dataclasses import asdict

        from toolgym.commands._cli import emit_json

        emit_json({"env_id": args.env, "split": args.split, "policy": args.policy, "episodes": len(results),
                   "errors": len(errors), "elapsed_s": round(elapsed, 3),
                   "rows": [asdict(row) for row in ev.summarize(results)]})
    else:
        print(f"{args.env} {args.split}: policy {args.policy}, {len(results)} episodes in {elapsed:.1f} s")
        print(ev.format_table(ev.summarize(results)))
    if errors:
        print(f"{len(errors)} episode(s) failed and are not scored; first: {errors[0].task_id}: {errors[0].error}",
              file=sys.stderr)
        return 1
    return 0

