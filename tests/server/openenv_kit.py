"""A cached virtualenv with OpenEnv's client (``openenv`` from PyPI), for test_openenv.py.

``openenv`` pins its own FastAPI, MCP and Gradio stack, so it gets a virtualenv of its own
rather than the project's. It is made on first use and kept: ``$TOOLGYM_OPENENV_VENV``, else
``.venv-openenv/`` in the repository root (git-ignored; cache it in CI keyed on
``OPENENV_VERSION``). A marker file names the version installed, so a new pin rebuilds it, and a
file lock keeps parallel test processes from building it twice. ``--no-compile`` skips
byte-compiling the whole stack up front (a sixth of the build time); what the client imports
is compiled on first use.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

OPENENV_VERSION = "0.10.0"
ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 900


def venv_dir() -> Path:
    return Path(os.environ.get("TOOLGYM_OPENENV_VENV") or ROOT / ".venv-openenv")


def openenv_python() -> Path:
    """The virtualenv's python, after making the virtualenv if it is missing or of another version."""
    where = venv_dir()
    python = where / "bin" / "python"
    marker = where / ".toolgym-openenv-version"
    where.parent.mkdir(parents=True, exist_ok=True)
    with open(where.with_name(where.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and marker.exists() and marker.read_text().strip() == OPENENV_VERSION:
            return python
        shutil.rmtree(where, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
             f"openenv=={OPENENV_VERSION}"],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
        )
        if done.returncode != 0:
            shutil.rmtree(where, ignore_errors=True)
            raise RuntimeError(f"pip could not install openenv=={OPENENV_VERSION}:\n{done.stderr[-3000:]}")
        marker.write_text(OPENENV_VERSION + "\n")
    return python
