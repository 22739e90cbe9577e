"""``toolgym demo`` as a new user runs it: the installed command in a subprocess.

The process backend keeps these fast; what they check (what the demo says about the backend,
and that ``--json`` writes JSON Lines and nothing else on stdout) does not depend on Docker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLGYM = str(Path(sys.executable).parent / "toolgym")

pytestmark = pytest.mark.slow


def toolgym_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOLGYM, "demo", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_json_output_is_json_lines_and_a_chosen_backend_is_called_chosen() -> None:
    done = toolgym_demo("--backend", "process", "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    episodes = []
    for line in lines:
        record = json.loads(line)  # every stdout line is one JSON object, nothing else
        assert isinstance(record, dict), line
        episodes.append(record)
    assert {r["env_id"] for r in episodes} == {"toolgym/ToolUse-v0", "toolgym/CodeMath-v0",
                                               "toolgym/FunctionCall-v0"}
    assert all({"task_id", "policy", "rewards", "reason", "notes"} <= set(r) for r in episodes)
    # The human notes went to stderr, and they tell the truth: the user asked for this backend
    # (where an engine answers, as here in CI, the demo once called this a fallback).
    assert "no Docker engine answers" not in done.stderr
    assert "process backend, as asked (--backend process" in done.stderr
    assert f"demo: {len(episodes)} episodes in" in done.stderr


def test_auto_says_it_fell_back_when_no_engine_answers(tmp_path: Path) -> None:
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    done = toolgym_demo("--backend", "auto", env={"DOCKER_HOST": nowhere})
    assert done.returncode == 0, done.stderr
    assert "no Docker engine answers; falling back on the process backend" in done.stdout
    assert "as asked" not in done.stdout
    assert "ToolUse-v0" in done.stdout and "step rewards" in done.stdout  # the table


def test_docker_asked_for_but_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    done = toolgym_demo("--backend", "docker", env={"DOCKER_HOST": nowhere})
    assert done.returncode == 1
    assert "--backend docker" in done.stderr and "no Docker engine answers" in done.stderr
    assert "Traceback" not in done.stderr

