"""``toolgym status``: is the server up, ready, and how are its envs doing?

    toolgym status [--base-url URL] [--api-key KEY] [--json]

One look at a running server through its HTTP API: liveness (``/healthz``), readiness
(``/readyz``: the sandbox backend, the warm pool, open episodes against the limit), the
version, this key's live episodes, and per env the tasks served and their pass rate (from
``/v1/envs/{env_id}/tasks/stats``: the share of finished episodes that succeeded).

Exit status: 0 when the server is ready, 4 when it answers but is not ready, 3 when nothing
answers at the address, 1 when a request fails (e.g. a wrong key). ``--json`` writes one
JSON document with the same facts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from toolgym.commands import _cli
from toolgym.errors import ToolGymError

__all__ = ["add_parser", "collect", "run"]


def add_parser(sub: Any) -> None:
    """Register ``toolgym status`` and its options."""
    p: argparse.ArgumentParser = sub.add_parser(
        "status", help="health, readiness, live episodes, per-env pass rates and version of a server",
        description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_server_flags(p)
    _cli.add_json_flag(p)
    p.set_defaults(run=run)


def _env_summary(env: dict[str, Any], stats: list[dict[str, Any]]) -> dict[str, Any]:
    """One env's line: tasks per split, episodes, pass rate, mean return, task classes.

    Pass rate and mean return are over the finished episodes (each task's rates weighted by
    its finished episodes).
    """
    finished = sum(int(s["finished"]) for s in stats)
    passed = sum(float(s["success_rate"]) * int(s["finished"]) for s in stats)
    returns = sum(float(s["mean_return"]) * int(s["finished"]) for s in stats)
    classes: dict[str, int] = {}
    for s in stats:
        classes[s["status"]] = classes.get(s["status"], 0) + 1
    return {
        "env_id": env["id"], "tasks": dict(env.get("tasks", {})),
        "episodes": sum(int(s["episodes"]) for s in stats), "finished": finished,
        "pass_rate": passed / finished if finished else None,
        "mean_return": returns / finished if finished else None,
        "task_classes": classes,
    }


def collect(base_url: str, api_key: str | None) -> dict[str, Any]:
    """Every fact ``status`` shows, as one JSON-ready dict.

    Raises on a transport error (no server) or a refused request (e.g. 401).
    """
    from toolgym.client import EnvClient

    report: dict[str, Any] = {"base_url": base_url}
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        health = http.get("/healthz")
        report["healthy"] = health.status_code == 200
        ready = http.get("/readyz")
        try:
            report["readiness"] = ready.json()
        except ValueError:
            report["readiness"] = {"status": "not_ready", "error": ready.text[:200]}
    report["ready"] = ready.status_code == 200 and report["readiness"].get("status") == "ready"
    with EnvClient(base_url, api_key, timeout_s=30.0, retry=_cli.CLI_RETRY) as client:
        report["version"] = client.version()
        report["live_episodes"] = int(client.episodes(status="live", limit=1)["total"])
        report["envs"] = [_env_summary(env, client.task_stats(env["id"])) for env in client.envs()]
    return report


def _print_report(report: dict[str, Any]) -> None:
    ready = report["readiness"]
    backend = ready.get("backend") or {}
    version = report["version"]
    print(f"server     {report['base_url']}  toolgym {version['version']} (API {version['api_version']})")
    print(f"health     {'ok' if report['healthy'] else 'FAILING'}")
    state = "ready" if report["ready"] else "NOT READY"
    print(f"readiness  {state}; accepting resets: {'yes' if ready.get('accepting') else 'no'}")
    if backend:
        isolation = "isolated" if backend.get("isolated") else "NOT isolated (process backend)"
        line = f"backend    {backend.get('name')}, {isolation}"
        if backend.get("error"):
            line += f"; error: {backend['error']}"
        print(line)
    pool = ready.get("warm_pool")
    if pool:
        line = f"warm pool  {pool.get('ready')}/{pool.get('size')} sandboxes ready"
        if pool.get("last_error"):
            line += f"; last error: {pool['last_error']}"
        print(line)
    print(f"episodes   {ready.get('open_episodes')} open on the server (limit {ready.get('max_live_episodes')}),"
          f" {report['live_episodes']} live for this key")
    print()
    rows = []
    for env in report["envs"]:
        tasks = env["tasks"]
        split_text = " ".join(f"{k}={v}" for k, v in sorted(tasks.items())) or "-"
        classes = env["task_classes"]
        rows.append([env["env_id"], split_text, env["episodes"], env["finished"],
                     None if env["pass_rate"] is None else f"{100 * env['pass_rate']:.1f}%",
                     env["mean_return"], classes.get("mastered", 0), classes.get("failing", 0)])
    print(_cli.format_table(
        ["env", "tasks", "episodes", "finished", "pass rate", "mean return", "mastered", "failing"], rows,
        right=("episodes", "finished", "pass rate", "mean return", "mastered", "failing")))


def run(args: argparse.Namespace) -> int:
    """Print the server's status; the exit code says ready (0), not ready (4) or no server (3)."""
    base_url, api_key = _cli.server_target(args)
    try:
        report = collect(base_url, api_key)
    except (ToolGymError, httpx.HTTPError) as exc:  # a message and an exit code, not a traceback
        return _cli.error_exit("status", exc, base_url, as_json=args.json)
    if args.json:
        _cli.emit_json(report)
    else:
        _print_report(report)
    if not report["ready"]:
        print(f"toolgym status: the server at {base_url} is not ready (see readiness above)", file=sys.stderr)
        return _cli.EXIT_BLOCKED
    return _cli.EXIT_OK
