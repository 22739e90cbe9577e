"""OpenEnv's client (``openenv`` from PyPI) in a cached venv of its own, for test_openenv.py.

``openenv`` pins its own FastAPI, MCP and Gradio stack, so it cannot share the project's venv;
``tests/venv_cache.py`` builds it once per version and keeps it outside the checkout.
"""

from __future__ import annotations

from pathlib import Path

from venv_cache import cached_venv

OPENENV_VERSION = "0.10.0"


def openenv_python() -> Path:
    """The python of a cached venv holding OpenEnv's client at ``OPENENV_VERSION``."""
    return cached_venv("openenv", [f"openenv=={OPENENV_VERSION}"])
