"""A runner for the trainer adapters' scripts, each in its trainer's cached venv (tests/venv_cache.py).

Each trainer gets ToolGym (this checkout, editable) with its own extra and nothing else, so the
test exercises exactly what ``pip install toolgym[<extra>]`` gives a user.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from venv_cache import toolgym_venv

SCRIPTS = Path(__file__).with_name("scripts")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

def run_in_venv(extra: str, script: Path, *args: str, env: Mapping[str, str] | None = None,
                timeout_s: float = 300) -> str:
    """Run ``script`` with the trainer venv's python (its ``bin`` first on PATH); return its stdout."""
    python = toolgym_venv(extra)
    environ = {**os.environ, **(env or {}), "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(python), str(script), *args], capture_output=True, text=True,
                          timeout=timeout_s, env=environ)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stderr[-6000:]}"
    return done.stdout


def run_script(extra: str, script: str, *args: str, timeout_s: float = 300) -> dict[str, Any]:
    """Run ``scripts/<script>`` in the trainer's venv and return the JSON it printed last."""
    out = run_in_venv(extra, SCRIPTS / script, *args, timeout_s=timeout_s)
    return dict(json.loads(out.strip().splitlines()[-1]))
