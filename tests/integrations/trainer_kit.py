"""Helpers of the trainer tests: each trainer's cached venv, ToolUse tasks a scripted model can
play, a runner for trainer-side scripts, and a killer of one task's sandboxes (a real
infrastructure fault).

The trainers run in venvs of their own (``tests/venv_cache.py``): their stacks exclude each other
and none belongs in the project's venv. The pytest process starts a real server on loopback and
runs a script of ``tests/integrations/scripts`` (or an example) in the trainer's venv; the script
prints one JSON line that the test asserts on.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from server_kit import ECHO_SOURCE, ENV, docker, register, tool_schema
from venv_cache import toolgym_venv

SCRIPTS = Path(__file__).parent / "scripts"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOOL = "lookup"
ARGUMENTS = {"key": "alpha"}
LABEL_EPISODE = "toolgym.episode"
SLOW_SOURCE = "import time\ndef slow(seconds):\n    time.sleep(seconds)\n    return 'SLOW-GOLD-42'\n"
OFFLINE_ENV = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2",
               "PYTHONUNBUFFERED": "1"}
"""No hub (none is reachable here), no GPU, two threads: what every trainer script runs under."""
__all__ = ["ENV", "EXAMPLES", "SandboxKiller", "register_slow_task", "register_tasks", "run_in_venv", "run_script"]


def run_in_venv(extra: str, script: Path, *args: str, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, timeout_s: float = 300) -> str:
    """Run ``script`` with the python of ``toolgym[extra]``'s cached venv (its ``bin`` first on
    PATH, the test's ``TOOLGYM_*`` variables left out unless ``env`` gives them); its stdout."""
    python = toolgym_venv(extra)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_")}
    environ.update(OFFLINE_ENV)
    environ.update(env or {})
    environ["PATH"] = f"{python.parent}{os.pathsep}{environ.get('PATH', '')}"
    done = subprocess.run([str(python), str(script), *args], capture_output=True, text=True,
                          timeout=timeout_s, env=environ, cwd=cwd)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout


def run_script(extra: str, script: str, *args: str, cwd: Path | None = None, timeout_s: float = 300) -> dict[str, Any]:
    """Run ``scripts/<script>`` in the trainer's venv; the JSON of its last stdout line."""
    out = run_in_venv(extra, SCRIPTS / script, *args, cwd=cwd, timeout_s=timeout_s)
    return dict(json.loads(out.strip().splitlines()[-1]))


def run_with_config(extra: str, script: str, config: dict[str, Any], tmp_path: Path,
                    timeout_s: float = 900) -> dict[str, Any]:
    """``run_script`` with ``config`` written to a JSON file whose path is the script's argument."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return run_script(extra, script, str(path), cwd=tmp_path, timeout_s=timeout_s)


def register_slow_task(base_url: str, key: str | None = None) -> str:
    """Register a ToolUse task whose ``slow`` tool takes seconds (long enough to kill its sandbox
    during the call) beside an ``echo`` tool; its id."""
    record = {
        "id": f"slow-{uuid.uuid4().hex[:8]}",
        "messages": [{"role": "system", "content": "You call tools."}, {"role": "user", "content": "Use the tools."}],
        "tools": [tool_schema("slow", {"seconds": "number"}), tool_schema("echo", {"text": "string"})],
        "codes": {"slow": SLOW_SOURCE, "echo": ECHO_SOURCE},
        "answer": "SLOW-GOLD-42",
        "unsolved_set": {"slow": ["SLOW-GOLD-42"]},
    }
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        [task_id] = register(http, record)
    return task_id


def _record(task_id: str, source: str, gold: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "messages": [{"role": "system", "content": "You call tools."},
                     {"role": "user", "content": "What is stored under alpha?"}],
        "tools": [tool_schema(TOOL, {"key": "string"})],
        "codes": {TOOL: source},
        "answer": gold,
        "unsolved_set": {TOOL: [gold]},
    }


def register_tasks(base_url: str, tag: str) -> dict[str, str]:
    """Three ToolUse tasks with one ``lookup`` tool: ``solved`` (the call finds the gold),
    ``unsolved`` (it finds nothing: a true reward of 0) and ``infra`` (the call sleeps 3 s, long
    enough for ``SandboxKiller`` to kill its sandbox every time)."""
    records = {
        "solved": _record(f"{tag}-solved", "def lookup(key):\n    return 'GOLD-A-42' if key == 'alpha' else 'no'\n",
                          "GOLD-A-42"),
        "unsolved": _record(f"{tag}-unsolved", "def lookup(key):\n    return 'nothing stored'\n", "GOLD-B-17"),
        "infra": _record(f"{tag}-infra", "import time\ndef lookup(key):\n    time.sleep(3)\n    return 'GOLD-C-9'\n",
                         "GOLD-C-9"),
    }
    with httpx.Client(base_url=base_url, timeout=60) as http:
        register(http, *records.values())
    return {name: str(record["id"]) for name, record in records.items()}


class SandboxKiller:
    """Kills, every 0.1 s, the sandbox containers of every live episode of ``task_id`` that has
    played at least ``after_turn`` steps, from outside, as a crashed host or an OOM kill would.

    The server replaces a sandbox that dies during a step and retries the step once, and the
    client retries a 503; every attempt dies again, so the fault outlives both and reaches the
    trainer. Used as a context manager; bounded by ``deadline_s``.
    """

    def __init__(self, base_url: str, task_id: str, *, key: str | None = None, after_turn: int = 0,
                 deadline_s: float = 600.0) -> None:
        self.base_url, self.task_id, self.key = base_url, task_id, key
        self.after_turn, self.deadline_s = after_turn, deadline_s
        self.killed: set[str] = set()
        """The episodes whose sandbox was killed at least once."""
        self.episode_id: str | None = None
        """The first of them."""
        self.kills = 0
        """Containers killed in all."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SandboxKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        end = time.monotonic() + self.deadline_s
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as http, docker() as engine:
            while not self._stop.wait(0.1) and time.monotonic() < end:
                try:
                    page = http.get("/v1/episodes", params={"status": "live", "limit": 500}).json()
                except httpx.HTTPError:
                    continue
                for episode in page.get("episodes", []):
                    if episode["task_id"] != self.task_id or episode["turn"] < self.after_turn:
                        continue
                    label = f"{LABEL_EPISODE}={episode['episode_id']}"
                    for container in engine.containers.list(filters={"label": label}):
                        try:
                            container.kill()
                        except Exception:  # already dead or removed: the next round looks again
                            continue
                        self.kills += 1
                        self.killed.add(episode["episode_id"])
                        self.episode_id = self.episode_id or episode["episode_id"]
