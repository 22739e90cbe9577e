"""The peers of ``bench/peers.py``, each in a scratch virtualenv outside the repository:
installing them (``--install``), probing why one cannot run, and serving OpenEnv's echo env.

- OpenEnv: ``openenv`` 0.10.0 from PyPI. Its echo env is the one ``openenv init`` writes (a
  plain ``Environment`` that echoes a message; OpenEnv's repository ships its example envs as
  container images, not on PyPI). The scaffold caps WebSocket sessions at 1; the copy here
  allows 64, so 32 concurrent sessions fit. Served by uvicorn in a child process on 127.0.0.1.
- AgentBox: ``agentbox-rl`` 0.3.0 from PyPI, driven by ``bench/_peer_agentbox_run.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import free_port

BENCH = Path(__file__).resolve().parent
OPENENV = {"venv": "/tmp/peer-openenv", "packages": ["openenv==0.10.0"], "dist": "openenv"}
AGENTBOX = {"venv": "/tmp/peer-agentbox", "packages": ["agentbox-rl==0.3.0"], "dist": "agentbox-rl"}
ECHO_DIR = "/tmp/peer-openenv-echo"
ECHO_NAME = "bench_echo"


def python_of(venv: str) -> str:
    return f"{venv}/bin/python"


def install(peer: dict[str, Any]) -> str | None:
    """Make the peer's virtualenv when missing; None on success, else why not."""
    venv = str(peer["venv"])
    if Path(python_of(venv)).exists():
        return None
    print(f"installing {' '.join(peer['packages'])} into {venv} (outside the repository)", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
        subprocess.run([python_of(venv), "-m", "pip", "install", "-q", *peer["packages"]], check=True, timeout=1200,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"pip install {' '.join(peer['packages'])} failed: {exc}"
    return None


def version(peer: dict[str, Any]) -> str | None:
    py = python_of(str(peer["venv"]))
    if not Path(py).exists():
        return None
    out = subprocess.run([py, "-c", f"import importlib.metadata as m; print(m.version({peer['dist']!r}))"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None


def make_echo_env() -> str | None:
    """Scaffold OpenEnv's echo env with ``openenv init`` (once); None on success, else why not."""
    target = Path(ECHO_DIR) / ECHO_NAME
    app = target / "server" / "app.py"
    if not app.exists():
        Path(ECHO_DIR).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([f"{OPENENV['venv']}/bin/openenv", "init", ECHO_NAME], cwd=ECHO_DIR,
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not app.exists():
            return f"openenv init failed: {(proc.stderr or proc.stdout)[-500:]}"
    text = app.read_text()
    if "max_concurrent_envs=1," in text:
        app.write_text(text.replace("max_concurrent_envs=1,", "max_concurrent_envs=64,"))
    return None


class EchoServer:
    """uvicorn serving the scaffolded echo env in OpenEnv's virtualenv; ended by its PID."""

    def __init__(self, tmp: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cmd = [python_of(str(OPENENV["venv"])), "-m", "uvicorn", "server.app:app", "--host", "127.0.0.1",
                    "--port", str(self.port), "--loop", "asyncio", "--http", "h11", "--log-level", "warning"]
        self.log = os.path.join(tmp, "openenv-echo.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EchoServer:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["ENABLE_WEB_INTERFACE"] = "false"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=Path(ECHO_DIR) / ECHO_NAME, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OpenEnv server exited ({self.proc.returncode}): "
                                   + Path(self.log).read_text()[-1500:])
            try:
                if httpx.get(self.base_url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the OpenEnv server did not start; log: {self.log}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


def run_json(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a peer's driver script; its last stdout line is its JSON result."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=BENCH, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[1]).name} failed ({proc.returncode}): {proc.stderr[-1200:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
