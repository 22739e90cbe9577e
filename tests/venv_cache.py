"""Cached virtualenvs for tests that need a library the project's own venv cannot hold.

Trainers and peers pin stacks that clash with ToolGym's and with each other (OpenEnv needs
fastmcp 3 while verifiers pins ``mcp==2.0.0``; verl caps transformers below what TRL's tool
parsing wants), so each gets a virtualenv of its own. A venv is made on first use and kept
under ``$TOOLGYM_VENV_CACHE`` (default ``~/.cache/toolgym/venvs``), outside the checkout, so a
CI run on a clean clone reuses what the previous run on that machine built. Its directory name
carries a hash of what was asked for (requirements, plus the project's ``pyproject.toml`` when
ToolGym itself is installed into it), so a changed pin builds a new one instead of reusing a
stale one. A file lock keeps parallel test processes from building the same venv twice.
``--no-compile`` skips byte-compiling the whole stack up front; what a test imports is
compiled on first use.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 1800


def cache_root() -> Path:
    """Where cached venvs live: ``$TOOLGYM_VENV_CACHE``, else ``~/.cache/toolgym/venvs``."""
    return Path(os.environ.get("TOOLGYM_VENV_CACHE") or Path.home() / ".cache" / "toolgym" / "venvs")


def cached_venv(
    name: str,
    requirements: Sequence[str],
    *,
    toolgym_extras: str | None = None,
    pip_args: Sequence[str] = (),
) -> Path:
    """The python of a venv holding ``requirements``, built once and reused while they hold.

    Args:
        name: a short label for the venv directory (``trl``, ``openenv``...).
        requirements: pip requirement strings installed in one ``pip install`` call.
        toolgym_extras: when set, this checkout is installed editable into the venv with these
            extras (``"trl"`` for ``.[trl]``; ``""`` for the bare package), after
            ``requirements``, so a test runs the adapter code of the working tree.
        pip_args: extra pip arguments (an index or a constraint), part of the cache key.

    Returns:
        The path of the venv's ``python``.

    Raises:
        RuntimeError: pip could not install what was asked for; pip's last output is kept.
    """
    key = hashlib.sha256()
    for part in (*requirements, "|", *pip_args, "|", str(toolgym_extras), sys.version):
        key.update(part.encode())
    if toolgym_extras is not None:
        key.update(repr(_toolgym_requirements(toolgym_extras)).encode())
    where = cache_root() / f"{name}-{key.hexdigest()[:12]}"
    python = where / "bin" / "python"
    marker = where / ".toolgym-complete"
    where.parent.mkdir(parents=True, exist_ok=True)
    with open(where.with_name(where.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and marker.exists():
            if toolgym_extras is not None:
                _point_at_this_checkout(python)
            return python
        shutil.rmtree(where, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
        _pip(python, [*pip_args, *requirements], what=" ".join(requirements))
        if toolgym_extras is not None:
            spec = f"{ROOT}[{toolgym_extras}]" if toolgym_extras else str(ROOT)
            _pip(python, [*pip_args, "-e", spec], what=spec)
        marker.write_text("\n".join(requirements) + "\n")
    return python


def _toolgym_requirements(extras: str) -> list[str]:
    """What installing ``toolgym[extras]`` asks pip for: the base dependencies and each extra's.

    The cache key holds these rather than the whole ``pyproject.toml``, so an unrelated edit there
    (another extra, a lint setting) does not rebuild every trainer's venv.
    """
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: no TOML reader in the stdlib; key on the whole file
        return [text]
    project = tomllib.loads(text)["project"]
    wanted = [e for e in extras.split(",") if e]
    optional = project.get("optional-dependencies", {})
    return [*project.get("dependencies", []), *(r for e in wanted for r in optional.get(e, []))]


def _pip(python: Path, args: Sequence[str], *, what: str) -> None:
    if not args:
        return
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile", *args],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )
    if done.returncode != 0:
        shutil.rmtree(python.parents[1], ignore_errors=True)
        raise RuntimeError(f"pip could not install {what}:\n{done.stderr[-3000:]}")


def _point_at_this_checkout(python: Path) -> None:
    """Re-point an editable ToolGym install at this checkout when the venv was built by another.

    The cache outlives the checkout (CI clones anew each run), so the editable install may name a
    directory that is gone; reinstalling it without dependencies takes a second.
    """
    probe = subprocess.run(
        [str(python), "-c", "import toolgym, os; print(os.path.dirname(os.path.dirname(toolgym.__file__)))"],
        capture_output=True, text=True, timeout=60,
    )
    if probe.returncode == 0 and Path(probe.stdout.strip()).resolve() == ROOT.resolve():
        return
    _pip(python, ["--no-deps", "-e", str(ROOT)], what=str(ROOT))


OPENENV_VERSION = "0.10.0"

TORCH = "torch==2.13.0"
"""The CPU build on this disk; plain ``torch`` (asked for by TRL or verl) would pull GBs of CUDA."""

EXTRA_REQUIREMENTS: dict[str, list[str]] = {"trl": [TORCH], "verl": [TORCH], "verifiers": ["uv>=0.5"]}
"""What a trainer's venv needs beside its extra, installed first: the CPU torch for TRL and verl;
``uv`` for verifiers, whose local runtime runs its harness program with it and otherwise installs
uv into ``~/.local`` by itself (given in the venv, whose ``bin`` is on a script's PATH, it leaves
the home directory alone)."""


def openenv_python() -> Path:
    """The python of a cached venv holding OpenEnv's client (``openenv`` from PyPI).

    ``openenv`` pins its own FastAPI, MCP and Gradio stack, so it cannot share the project's venv.
    """
    return cached_venv("openenv", [f"openenv=={OPENENV_VERSION}"])


def toolgym_venv(extra: str) -> Path:
    """The python of the cached venv holding this checkout as ``toolgym[extra]`` and nothing else.

    A trainer adapter's test then exercises exactly what ``pip install 'toolgym[extra]'`` gives a
    user, in a venv of its own (trainers pin stacks that clash with each other).
    """
    return cached_venv(extra, EXTRA_REQUIREMENTS.get(extra, []), toolgym_extras=extra)
