"""The cached venvs of the trainer adapters' tests, and a runner for their trainer-side scripts.

Each trainer gets ToolGym (this checkout, editable) with its own extra and nothing else, so the
test exercises exactly what ``pip install toolgym[<extra>]`` gives a user.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from venv_cache import cached_venv

SCRIPTS = Path(__file__).with_name("scripts")


def trainer_python(extra: str) -> Path:
    """The python of the cached venv holding ``toolgym[extra]`` (built on first use)."""
    return cached_venv(extra, [], toolgym_extras=extra)


def run_script(extra: str, script: str, *args: str, timeout_s: float = 300) -> dict[str, Any]:
    """Run ``scripts/<script>`` in the trainer's venv and return the JSON it printed last."""
    done = subprocess.run([str(trainer_python(extra)), str(SCRIPTS / script), *args],
                          capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-6000:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
