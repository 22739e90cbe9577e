"""Helpers of the trainer tests: the cached trainer venvs, ToolUse tasks whose tool a scripted
model calls, a script runner, and a killer of one task's sandboxes (a real infrastructure fault).

The trainers run in venvs of their own (tests/venv_cache.py): TRL and verl pin transformers
ranges that exclude each other and neither belongs in the project's venv. The pytest process
starts a real server on loopback and runs a script of tests/integrations/scripts in the trainer's
venv; the script prints one JSON line that the test asserts on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_kit import ENV, docker, register, tool_schema
from venv_cache import cached_venv

SCRIPTS = Path(__file__).parent / "scripts"
TORCH = "torch==2.13.0"
"""The CPU build on this disk; plain ``torch`` would pull several GB of CUDA wheels."""
TOOL = "lookup"
ARGUMENTS = {"key": "alpha"}
LABEL_EPISODE = "toolgym.episode"
__all__ = ["ENV", "trainer_python", "register_tasks", "run_script", "SandboxKiller"]


def trainer_python(extra: str) -> Path:
    """The python of the cached venv holding ``toolgym[extra]`` (this checkout) and the CPU torch."""
    return cached_venv(extra, [TORCH], toolgym_extras=extra)


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


def run_script(python: Path, script: str, config: dict[str, Any], tmp_path: Path,
               timeout_s: float = 900) -> dict[str, Any]:
    """Run ``scripts/<script>`` in the trainer venv with ``config``; its last stdout line, as JSON."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2",
           "PYTHONUNBUFFERED": "1"}
    for name in ("TOOLGYM_BASE_URL", "TOOLGYM_API_KEY"):
        env.pop(name, None)
    done = subprocess.run([str(python), str(SCRIPTS / script), str(path)], capture_output=True, text=True,
                          timeout=timeout_s, env=env, cwd=tmp_path)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


class SandboxKiller:
    """Kills, every 0.1 s, the sandbox container of every live episode of one task, from outside,
    as a crashed host or an OOM kill would: the server replaces the sandbox and retries the step,
    the client retries the 503, and every attempt dies again, so the fault outlives both."""

    def __init__(self, base_url: str, task_id: str) -> None:
        self.base_url, self.task_id = base_url, task_id
        self.killed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SandboxKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as http, docker() as engine:
            while not self._stop.wait(0.1):
                try:
                    page = http.get("/v1/episodes", params={"status": "live", "limit": 500}).json()
                except httpx.HTTPError:
                    continue
                for episode in page.get("episodes", []):
                    if episode["task_id"] != self.task_id:
                        continue
                    label = f"{LABEL_EPISODE}={episode['episode_id']}"
                    for container in engine.containers.list(filters={"label": label}):
                        try:
                            container.kill()
                            self.killed.add(episode["episode_id"])
                        except Exception:  # already dead or removed: the next round looks again
                            pass
            time.sleep(0)
