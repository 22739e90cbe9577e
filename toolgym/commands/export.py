"""``toolgym export``: this key's finished trajectories, for training or analysis.

    toolgym export --out trajectories.jsonl [--env ID] [--status finished]
    toolgym export --out my-dataset --format hf [--env ID]

``--format jsonl`` (the default) writes one JSON line per episode: its state as
``GET /v1/episodes/{id}`` returns it (ids, split, seed, options, status, reason, ``turn``,
``total_reward``, the ``reset`` observation, and ``steps``: per turn the action, observation,
reward, terminated, truncated and info, and ``sample``, the token ids and log-probabilities the
policy sent with the step, when it sent them). ``--out -`` writes the lines to stdout.

``--format hf`` writes a folder the Hugging Face ``datasets`` library loads as it is,
``datasets.load_dataset("my-dataset")``: ``data/<split>.jsonl`` (one file per task split) and a
``README.md`` dataset card whose YAML header names the files and the features. Its columns
are flat and typed (ids, ``rewards`` per step, ``step_status``, ``total_reward``, the sampled
``token_ids`` and ``logprobs`` per step ...); the
parts whose shape varies by env family (the chat ``messages`` with the actions as assistant
turns, ``tools``, ``steps``, ``options``, final ``metrics``) are JSON strings, so every file
has one schema (``json.loads`` them back).

Files are written whole or not at all. ``--json`` prints a summary document (``out``,
``format``, ``episodes``, counts per env and split). Exit status: 0, 1 when nothing matched or
a request or write failed, 2 on a usage error, 3 with no server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from toolgym.commands import _cli
from toolgym.errors import ToolGymError

__all__ = ["HF_FEATURES", "add_parser", "dataset_card", "hf_row", "iter_summaries", "run"]

HF_FEATURES: tuple[tuple[str, str], ...] = (
    ("episode_id", "string"), ("env_id", "string"), ("task_id", "string"), ("split", "string"),
    ("seed", "int64"), ("status", "string"), ("reason", "string"), ("turns", "int64"),
    ("total_reward", "float64"), ("rewards", "list:float64"), ("step_status", "list:string"),
    ("messages", "string"), ("tools", "string"), ("steps", "string"), ("options", "string"),
    ("metrics", "string"), ("token_ids", "list:list:int64"), ("logprobs", "list:list:float64"),
)
"""The ``hf`` layout's columns and their ``datasets`` types (``list:T`` is a list of T)."""

_FEATURE_DOCS = {
    "episode_id": "the episode's id on the server",
    "env_id": "the env family, e.g. toolgym/ToolUse-v0",
    "task_id": "the task played",
    "split": "the task's split (train, validation or test); also the file it is in",
    "status": "finished or interrupted",
    "total_reward": "the sum of the step rewards (the return)",
    "seed": "the reset seed (null when none was given)",
    "reason": "why the episode ended (answered, max_turns, closed, ...)",
    "turns": "steps taken",
    "rewards": "the reward of each step, in order",
    "step_status": "each step's info.status: ok, invalid_action, timeout or infra_error (mask infra_error)",
    "messages": "JSON: the chat, OpenAI format: the reset's messages, then per step the action as the"
                " assistant turn and the observation's messages",
    "tools": "JSON: the tool schemas shown at reset (null when none)",
    "steps": "JSON: the raw steps (action, observation, reward, terminated, truncated, info)",
    "options": "JSON: the reset options",
    "metrics": "JSON: the last step's info.metrics (e.g. solve_f1)",
    "token_ids": "per step, the token ids the policy sent with it (`sample.token_ids`; null for a step without)",
    "logprobs": "per step, their sampling log-probabilities (`sample.logprobs`; null when not sent)",
}


def add_parser(sub: Any) -> None:
    """Register ``toolgym export`` and its options."""
    p: argparse.ArgumentParser = sub.add_parser(
        "export", help="write finished trajectories as JSONL or a Hugging Face dataset folder",
        description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="PATH",
                   help="the JSONL file ('-' for stdout), or with --format hf the folder to create")
    p.add_argument("--format", choices=("jsonl", "hf"), default="jsonl",
                   help="jsonl: one line per episode; hf: a datasets-loadable folder (default: %(default)s)")
    p.add_argument("--env", default=None, metavar="ID", help="only episodes of this env id (default: all)")
    p.add_argument("--status", choices=("finished", "interrupted", "all"), default="finished",
                   help="which episodes (default: %(default)s; live ones are never exported)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N episodes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _cli.add_server_flags(p)
    _cli.add_json_flag(p, "a summary as one JSON document")
    p.set_defaults(run=run)


def iter_summaries(client: Any, status: str, env: str | None) -> Iterator[dict[str, Any]]:
    """Every episode summary of this key with ``status``, page by page.

    ``all`` means finished and interrupted; ``env`` filters by env id.
    """
    for wanted in (("finished", "interrupted") if status == "all" else (status,)):
        offset = 0
        while True:  # ends: the offset only grows, and an empty page stops it
            page = client.episodes(status=wanted, offset=offset, limit=1000)
            rows = page["episodes"]
            for row in rows:
                if env is None or row["env_id"] == env:
                    yield row
            offset += len(rows)
            if not rows or offset >= int(page["total"]):
                break


def _assistant(action: Any) -> dict[str, Any]:
    if isinstance(action, dict):
        return {"role": "assistant", **{k: v for k, v in action.items() if k != "role"}}
    return {"role": "assistant", "content": action if isinstance(action, str) else json.dumps(action)}


def hf_row(state: dict[str, Any]) -> dict[str, Any]:
    """One episode as a row of the ``hf`` layout (``HF_FEATURES``)."""
    reset_obs = (state.get("reset") or {}).get("observation") or {}
    messages = list(reset_obs.get("messages") or [])
    steps = state.get("steps") or []
    for step in steps:
        messages.append(_assistant(step.get("action")))
        messages.extend((step.get("observation") or {}).get("messages") or [])
    last_info = (steps[-1].get("info") or {}) if steps else {}
    return {
        "episode_id": state["episode_id"], "env_id": state["env_id"], "task_id": state["task_id"],
        "split": state["split"], "seed": state.get("seed"), "status": state["status"], "reason": state.get("reason"),
        "turns": int(state.get("turn", len(steps))), "total_reward": float(state.get("total_reward", 0.0)),
        "rewards": [float(s.get("reward", 0.0)) for s in steps],
        "step_status": [str((s.get("info") or {}).get("status", "ok")) for s in steps],
        "messages": json.dumps(messages, ensure_ascii=False),
        "tools": json.dumps(reset_obs.get("tools"), ensure_ascii=False),
        "steps": json.dumps(steps, ensure_ascii=False),
        "options": json.dumps(state.get("options") or {}, ensure_ascii=False),
        "metrics": json.dumps(last_info.get("metrics") or {}, ensure_ascii=False),
        "token_ids": [(s.get("sample") or {}).get("token_ids") for s in steps],
        "logprobs": [(s.get("sample") or {}).get("logprobs") for s in steps],
    }


def _yaml_feature(name: str, kind: str) -> str:
    if kind.startswith("list:list:"):
        return f"  - name: {name}\n    list:\n      list: {kind[10:]}"
    if kind.startswith("list:"):
        return f"  - name: {name}\n    list: {kind[5:]}"
    return f"  - name: {name}\n    dtype: {kind}"


def dataset_card(splits: dict[str, int], envs: dict[str, int], base_url: str) -> str:
    """The ``README.md`` of the ``hf`` layout.

    YAML that ``datasets`` reads (configs: the files per split; dataset_info: the features),
    then a short description of the columns.
    """
    files = "\n".join(f"  - split: {s}\n    path: data/{s}.jsonl" for s in sorted(splits))
    features = "\n".join(_yaml_feature(n, k) for n, k in HF_FEATURES)
    columns = "\n".join(f"| `{n}` | {k.replace('list:', 'list of ')} | {_FEATURE_DOCS.get(n, '')} |"
                        for n, k in HF_FEATURES)
    env_lines = "\n".join(f"- `{e}`: {n} episode(s)" for e, n in sorted(envs.items()))
    return (
        "---\nconfigs:\n- config_name: default\n  data_files:\n" + files + "\n"
        "dataset_info:\n  features:\n" + features + "\n"
        "tags:\n- toolgym\n- reinforcement-learning\n- tool-use\n---\n\n"
        "# ToolGym trajectories\n\n"
        f"Episodes exported by `toolgym export --format hf` from the server at {base_url}, one row per\n"
        "episode, one file per task split (`data/<split>.jsonl`). Load it with\n"
        "`datasets.load_dataset(\"<this folder>\")`.\n\n" + env_lines + "\n\n"
        "| column | type | meaning |\n|---|---|---|\n" + columns + "\n"
    )


def _totals(counts: Counter[tuple[str, str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Episodes per split and per env, from counts per (env, split)."""
    splits: Counter[str] = Counter()
    envs: Counter[str] = Counter()
    for (env, split), n in counts.items():
        splits[split] += n
        envs[env] += n
    return dict(sorted(splits.items())), dict(sorted(envs.items()))


def _write_jsonl(out: IO[str], states: Iterator[dict[str, Any]]) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for state in states:
        out.write(json.dumps(state, ensure_ascii=False) + "\n")
        counts[(state["env_id"], state["split"])] += 1
    return counts


def _write_hf(folder: Path, states: Iterator[dict[str, Any]], base_url: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    (folder / "data").mkdir(parents=True)
    files: dict[str, IO[str]] = {}
    try:
        for state in states:
            row = hf_row(state)
            split = row["split"]
            if split not in files:
                files[split] = open(folder / "data" / f"{split}.jsonl", "w", encoding="utf-8")
            files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[(row["env_id"], split)] += 1
    finally:
        for f in files.values():
            f.close()
    splits, envs = _totals(counts)
    (folder / "README.md").write_text(dataset_card(splits, envs, base_url), encoding="utf-8")
    return counts


def _usage(message: str) -> int:
    print(f"toolgym export: error: {message}", file=sys.stderr)
    return _cli.EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Export; files appear only when complete (written beside the target, then renamed)."""
    from toolgym.client import EnvClient

    if args.limit is not None and args.limit < 1:
        return _usage("--limit must be >= 1")
    to_stdout = args.out == "-"
    if to_stdout and (args.format != "jsonl" or args.json):
        return _usage("--out - writes JSONL to stdout: it goes with neither --format hf nor --json")
    target = Path(args.out)
    if args.format == "hf" and target.exists() and (not target.is_dir() or any(target.iterdir())):
        print(f"toolgym export: {target} exists and is not an empty folder; remove it or pick another --out",
              file=sys.stderr)
        return _cli.EXIT_ERROR
    base_url, api_key = _cli.server_target(args)
    try:
        with EnvClient(base_url, api_key, timeout_s=120.0, retry=_cli.CLI_RETRY) as client:
            summaries = list(iter_summaries(client, args.status, args.env))
            if args.limit is not None:
                summaries = summaries[: args.limit]
            if not summaries:
                which = f"{args.status} episodes" + (f" of {args.env}" if args.env else "")
                print(f"toolgym export: no {which} for this key at {base_url}; nothing written", file=sys.stderr)
                if args.json:
                    _cli.emit_json({"out": None, "format": args.format, "episodes": 0, "envs": {}, "splits": {}})
                return _cli.EXIT_ERROR
            with _cli.Progress(len(summaries), "export", "ep", disable=not _cli.show_progress(args)) as bar:
                def states() -> Iterator[dict[str, Any]]:
                    for summary in summaries:
                        yield client.episode(summary["episode_id"])
                        bar.update(1)

                counts = _export(args, target, to_stdout, states(), base_url)
    except (ToolGymError, httpx.HTTPError) as exc:
        return _cli.error_exit("export", exc, base_url, as_json=args.json)
    except OSError as exc:
        print(f"toolgym export: cannot write {args.out}: {exc}", file=sys.stderr)
        return _cli.EXIT_ERROR
    splits, envs = _totals(counts)
    total = sum(counts.values())
    summary = {"out": None if to_stdout else str(target), "format": args.format, "episodes": total,
               "envs": envs, "splits": splits}
    if args.json:
        _cli.emit_json(summary)
    else:
        where = "stdout" if to_stdout else str(target)
        per_env = ", ".join(f"{e} {n}" for e, n in sorted(envs.items()))
        line = f"exported {total} episode(s) ({per_env}) to {where} as {args.format}"
        print(line, file=sys.stderr if to_stdout else sys.stdout)
    return _cli.EXIT_OK


def _export(args: argparse.Namespace, target: Path, to_stdout: bool, states: Iterator[dict[str, Any]],
            base_url: str) -> Counter[tuple[str, str]]:
    if to_stdout:
        return _write_jsonl(sys.stdout, states)
    parent = target.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if args.format == "jsonl":
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                counts = _write_jsonl(out, states)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return counts
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
    try:
        counts = _write_hf(staging / "dataset", states, base_url)
        if target.exists():
            target.rmdir()  # empty (checked before any request)
        os.replace(staging / "dataset", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts
