"""``toolgym episodes``: list this key's episodes, or show one turn by turn.

    toolgym episodes ls [--status live|finished|interrupted] [--env ID] [--limit N] [--json]
    toolgym episodes show EPISODE_ID [--json]

``ls`` prints a table of episodes (newest pages as the server orders them); ``--json`` writes
the server's page as one JSON document (``{"episodes", "total", "offset", "limit"}``).
``show`` prints the episode's header and one row per step (reward, status, the start of the
action); ``--json`` writes the episode's full state (``GET /v1/episodes/{id}``) as one JSON
document. Exit status: 0, 1 on a failed request (e.g. an unknown episode), 3 with no server.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from toolgym.commands import _cli
from toolgym.errors import ToolGymError

__all__ = ["add_parser", "run"]

_STATUSES = ("live", "finished", "interrupted")


def add_parser(sub: Any) -> None:
    """Register ``toolgym episodes ls`` and ``toolgym episodes show``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "episodes", help="list this key's episodes (ls) or show one turn by turn (show)",
        description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="episodes_command", required=True, metavar="{ls,show}",
                               help="ls: a table of episodes; show: one episode")
    ls = actions.add_parser("ls", help="a table of this key's episodes")
    ls.add_argument("--status", choices=_STATUSES, default=None, help="only episodes in this state (default: all)")
    ls.add_argument("--env", default=None, metavar="ID", help="only episodes of this env id")
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="at most N episodes (default %(default)s)")
    ls.add_argument("--offset", type=int, default=0, metavar="K", help="skip the first K (default 0)")
    _cli.add_server_flags(ls)
    _cli.add_json_flag(ls, "the page as one JSON document")
    show = actions.add_parser("show", help="one episode: its header and a row per step")
    show.add_argument("episode_id", metavar="EPISODE_ID", help="the episode's id (from `toolgym episodes ls`)")
    show.add_argument("--width", type=int, default=70, metavar="W",
                      help="characters of each action shown in the table (default %(default)s)")
    _cli.add_server_flags(show)
    _cli.add_json_flag(show, "the episode's full state as one JSON document")
    p.set_defaults(run=run)


def action_text(action: Any) -> str:
    """An action on one line: the text, then each tool call as ``name(arguments)``."""
    if isinstance(action, str):
        text = action
    elif isinstance(action, dict):
        parts = [str(action.get("content") or "")]
        for call in action.get("tool_calls") or []:
            fn = call.get("function", {}) if isinstance(call, dict) else {}
            args = fn.get("arguments", "")
            args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            parts.append(f"{fn.get('name', '?')}({args_text})")
        text = " ".join(p for p in parts if p)
    else:
        text = json.dumps(action, ensure_ascii=False)
    return " ".join(text.split())


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


def list_page(client: Any, status: str | None, env: str | None, limit: int, offset: int) -> dict[str, Any]:
    """A page of episodes, filtered by env on this side (the API filters by status only).

    With ``env`` every page is read, so ``total`` is the number of matching episodes.
    """
    if env is None:
        return dict(client.episodes(status=status, offset=offset, limit=limit))
    found: list[dict[str, Any]] = []
    skipped = 0
    cursor = 0
    total = 0
    while True:  # every page, so "total" counts all matches (ends: the cursor only grows)
        page = client.episodes(status=status, offset=cursor, limit=1000)
        rows = page["episodes"]
        for row in rows:
            if row["env_id"] != env:
                continue
            total += 1
            if skipped < offset:
                skipped += 1
            elif len(found) < limit:
                found.append(row)
        cursor += len(rows)
        if not rows or cursor >= int(page["total"]):
            break
    return {"episodes": found, "total": total, "offset": offset, "limit": limit, "env_id": env}


def _ls(client: Any, args: argparse.Namespace) -> int:
    page = list_page(client, args.status, args.env, args.limit, args.offset)
    if args.json:
        _cli.emit_json(page)
        return _cli.EXIT_OK
    rows = [[e["episode_id"], e["env_id"], e["task_id"], e["split"], e["status"], e["turn"], e["total_reward"],
             e["reason"]] for e in page["episodes"]]
    print(_cli.format_table(["episode", "env", "task", "split", "status", "turns", "return", "reason"], rows,
                            right=("turns", "return")))
    shown = len(rows)
    print(f"{shown} episode(s) of {page['total']}" + (f", from offset {args.offset}" if args.offset else ""))
    return _cli.EXIT_OK


def _show(client: Any, args: argparse.Namespace) -> int:
    state = client.episode(args.episode_id)
    if args.json:
        _cli.emit_json(state)
        return _cli.EXIT_OK
    print(f"episode  {state['episode_id']}")
    print(f"env      {state['env_id']}  task {state['task_id']} ({state['split']})  seed {state['seed']}")
    print(f"status   {state['status']}" + (f" ({state['reason']})" if state.get("reason") else "")
          + f"  turns {state['turn']}  return {float(state['total_reward']):+.3f}")
    rows = []
    for step in state["steps"]:
        info = step.get("info") or {}
        ended = "terminated" if step.get("terminated") else "truncated" if step.get("truncated") else ""
        rows.append([step.get("turn"), f"{float(step.get('reward', 0.0)):+.3f}", info.get("status"), ended,
                     _clip(action_text(step.get("action")), max(10, args.width))])
    print()
    print(_cli.format_table(["turn", "reward", "status", "ended", "action"], rows, right=("turn", "reward")))
    metrics = (state["steps"][-1].get("info") or {}).get("metrics") if state["steps"] else None
    if metrics:
        print("metrics  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in sorted(metrics.items())))
    return _cli.EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``episodes ls`` or ``episodes show``."""
    from toolgym.client import EnvClient

    if not 1 <= getattr(args, "limit", 1) <= 1000 or getattr(args, "offset", 0) < 0:
        print("toolgym episodes: error: --limit must be 1..1000 and --offset >= 0", file=sys.stderr)
        return _cli.EXIT_USAGE
    base_url, api_key = _cli.server_target(args)
    try:
        with EnvClient(base_url, api_key, timeout_s=60.0, retry=_cli.CLI_RETRY) as client:
            if args.episodes_command == "ls":
                return _ls(client, args)
            return _show(client, args)
    except (ToolGymError, httpx.HTTPError) as exc:
        return _cli.error_exit(f"episodes {args.episodes_command}", exc, base_url, as_json=args.json)
