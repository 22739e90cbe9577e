"""ToolGym vs OpenEnv (``openenv-core`` from PyPI): HTTP reset/step latency, same client loop,
same counts, same run.

OpenEnv is installed in a scratch virtualenv outside the repository (default
``/tmp/peer-venv``; ``--install`` makes it: ``pip install openenv-core smolagents``). Its
server is OpenEnv's own FastAPI app (``openenv.core.env_server.create_app``) around two small
envs in ``bench/_openenv_app.py``, shaped like OpenEnv's ``echo_env`` and ``coding_env``,
each served by uvicorn in a child process on 127.0.0.1. ToolGym runs as ``toolgym serve`` in
a child process too (Docker backend, warm pool 2; and the process backend for reference), so
neither server shares a GIL with the client. Both use uvicorn with asyncio and h11.

Pairs compared (like with like):

- trivial step: ToolGym FunctionCall-v0 (reset draws nothing from a sandbox; the step parses a
  ``<tool_call>`` and verifies it against the gold, no sandbox; the episode is stored in
  SQLite) vs OpenEnv echo (``CallToolAction`` to a FastMCP ``echo_message`` tool, in process);
- code-execution step: ToolGym CodeMath-v0 (a small ```python block run in a fresh process in
  the episode's container) vs OpenEnv coding (the same code run by smolagents'
  ``LocalPythonExecutor``, an AST interpreter inside the server process).

The client loop is one function for both: ``httpx.Client`` with keep-alive, one request at a
time: reset, then steps (1 for the trivial pair, ``--steps`` for the code pair), then for
ToolGym the close (``DELETE``; OpenEnv's HTTP API has none). Systems alternate in rounds, so
both see the same noise. Note what each HTTP step *is*: OpenEnv's HTTP ``/reset`` and
``/step`` are stateless (each request builds a fresh env, acts, and closes it: no episode
survives between requests; a stateful episode needs its WebSocket ``/ws``), while ToolGym's
step acts on a stored episode. OpenEnv's ``/ws`` session is measured too, with its own client
(``websockets``, run in the peer's virtualenv), as extra rows.

Run: ``.venv/bin/python bench/peer_openenv.py [--episodes 40] [--steps 3] [--peer-python PATH] [--install]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import (
    CODE_BLOCK,
    CODEMATH,
    CODEMATH_ACTION,
    FUNCTIONCALL,
    FUNCTIONCALL_ACTION,
    FUNCTIONCALL_TASK,
    LATENCY_HEADERS,
    SubprocessServer,
    docker_problem,
    free_port,
    latency_row,
    ms,
    print_footer,
    print_header,
    ratio,
    summarize,
    table,
    wait_pool_full_http,
)

BENCH = Path(__file__).resolve().parent
DEFAULT_PEER = "/tmp/peer-venv"
PEER_PACKAGES = ["openenv-core", "smolagents"]
ECHO_ACTION = {"type": "call_tool", "tool_name": "echo_message", "arguments": {"message": "hello"}}
CODE_ACTION = {"code": CODE_BLOCK}

WS_CLIENT = r"""
import asyncio, json, sys, time
from websockets.asyncio.client import connect

async def main(url, action, episodes, steps):
    out = {"reset": [], "step": [], "connect": []}
    for _ in range(episodes):
        t = time.perf_counter()
        async with connect(url, max_size=None) as ws:
            out["connect"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await ws.send(json.dumps({"type": "reset", "data": {}}))
            reply = json.loads(await ws.recv())
            out["reset"].append(time.perf_counter() - t)
            assert reply.get("type") != "error", reply
            for _ in range(steps):
                t = time.perf_counter()
                await ws.send(json.dumps({"type": "step", "data": action}))
                reply = json.loads(await ws.recv())
                out["step"].append(time.perf_counter() - t)
                assert reply.get("type") != "error", reply
            await ws.send(json.dumps({"type": "close", "data": {}}))
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


# --- the peer -----------------------------------------------------------------------------------------
def peer_problem(python: str) -> str | None:
    """None when the peer's virtualenv can serve the two envs, else why not."""
    if not Path(python).exists():
        return (f"no peer virtualenv at {python}. Make it with --install, or: python3 -m venv {DEFAULT_PEER} && "
                f"{DEFAULT_PEER}/bin/pip install {' '.join(PEER_PACKAGES)}")
    probe = subprocess.run([python, "-c", "import openenv.core.env_server, smolagents, fastmcp, websockets, uvicorn"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return f"the peer's virtualenv cannot import OpenEnv's server: {probe.stderr.strip()[-600:]}"
    return None


def install_peer(venv: str) -> None:
    print(f"installing {' '.join(PEER_PACKAGES)} into {venv} (outside the repository)")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([f"{venv}/bin/pip", "install", "-q", *PEER_PACKAGES], check=True, timeout=900)


def peer_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('openenv-core'),"
                          " m.version('smolagents'), m.version('uvicorn'), m.version('fastapi'))"],
                         capture_output=True, text=True, timeout=60).stdout.split()
    return f"openenv-core {out[0]}, smolagents {out[1]}, uvicorn {out[2]}, fastapi {out[3]}" if len(out) == 4 else "?"


class PeerServer:
    """uvicorn serving one of ``_openenv_app``'s apps in the peer's virtualenv; ended by PID."""

    def __init__(self, python: str, app: str, tmp: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cmd = [python, "-m", "uvicorn", f"_openenv_app:{app}", "--host", "127.0.0.1", "--port", str(self.port),
                    "--loop", "asyncio", "--http", "h11", "--log-level", "warning"]
        self.log = os.path.join(tmp, f"openenv-{app}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PeerServer:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["ENABLE_WEB_INTERFACE"] = "false"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=BENCH, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OpenEnv server exited ({self.proc.returncode}); log: {self.log}:\n"
                                   + Path(self.log).read_text()[-2000:])
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


# --- the one client loop -------------------------------------------------------------------------------
@dataclass
class System:
    """How one server spells reset, step and close; the loop below is shared."""

    name: str
    base_url: str
    reset: Callable[[httpx.Client], str | None]
    step: Callable[[httpx.Client, str | None], Any]
    close: Callable[[httpx.Client, str | None], Any] | None
    before: Callable[[httpx.Client], None] | None = None


def client_loop(system: System, client: httpx.Client, episodes: int, steps: int,
                out: dict[str, list[float]]) -> None:
    for _ in range(episodes):
        if system.before:
            system.before(client)  # untimed (ToolGym: the warm pool full again)
        t = time.perf_counter()
        handle = system.reset(client)
        out["reset"].append(time.perf_counter() - t)
        if system.before:
            system.before(client)
        for _ in range(steps):
            t = time.perf_counter()
            system.step(client, handle)
            out["step"].append(time.perf_counter() - t)
        if system.close is not None:
            t = time.perf_counter()
            system.close(client, handle)
            out["close"].append(time.perf_counter() - t)


def _ok(r: httpx.Response) -> Any:
    r.raise_for_status()
    return r.json() if r.content else None


def toolgym_system(name: str, base_url: str, env_id: str, task_id: str, action: str, settle_s: float,
                   check: Callable[[Any], bool], warm_pool: int = 2) -> System:
    def reset(c: httpx.Client) -> str:
        return str(_ok(c.post("/v1/episodes", json={"env_id": env_id, "task_id": task_id, "seed": 0}))["episode_id"])

    def step(c: httpx.Client, eid: str | None) -> Any:
        body = _ok(c.post(f"/v1/episodes/{eid}/step", json={"action": action}))
        if not check(body):
            raise RuntimeError(f"{name}: unexpected step result {str(body)[:300]}")
        return body

    def close(c: httpx.Client, eid: str | None) -> Any:
        return _ok(c.delete(f"/v1/episodes/{eid}"))

    def before(c: httpx.Client) -> None:
        if wait_pool_full_http(c, warm_pool) > 0:
            time.sleep(settle_s)

    return System(name, base_url, reset, step, close, before if env_id != FUNCTIONCALL else None)


def openenv_system(name: str, base_url: str, action: dict[str, Any], check: Callable[[Any], bool]) -> System:
    def reset(c: httpx.Client) -> None:
        _ok(c.post("/reset", json={}))
        return None

    def step(c: httpx.Client, _: str | None) -> Any:
        body = _ok(c.post("/step", json={"action": action}))
        if not check(body):
            raise RuntimeError(f"{name}: unexpected step result {str(body)[:300]}")
        return body

    return System(name, base_url, reset, step, None)


def compare(systems: list[System], episodes: int, steps: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {s.name: defaultdict(list) for s in systems}
    clients = {s.name: httpx.Client(base_url=s.base_url, timeout=60) for s in systems}
    try:
        for s in systems:  # warm-up, untimed
            client_loop(s, clients[s.name], 2, steps, defaultdict(list))
        per_round = max(1, episodes // rounds)
        for _ in range(rounds):
            for s in systems:
                client_loop(s, clients[s.name], per_round, steps, results[s.name])
    finally:
        for c in clients.values():
            c.close()
    return results


def ws_measure(python: str, base_url: str, action: dict[str, Any], episodes: int, steps: int) -> dict[str, list[float]]:
    url = base_url.replace("http://", "ws://") + "/ws"
    proc = subprocess.run([python, "-c", WS_CLIENT, url, json.dumps(action), str(episodes), str(steps)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"WebSocket client failed: {proc.stderr[-1000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=40, help="episodes per system and pair")
    parser.add_argument("--steps", type=int, default=3, help="steps per code episode (<=4)")
    parser.add_argument("--rounds", type=int, default=4, help="alternations between the systems")
    parser.add_argument("--settle", type=float, default=0.25, help="untimed pause after ToolGym's pool refilled")
    parser.add_argument("--peer-python", default=f"{DEFAULT_PEER}/bin/python")
    parser.add_argument("--install", action="store_true", help=f"create {DEFAULT_PEER} with {PEER_PACKAGES}")
    parser.add_argument("--no-process-backend", action="store_true", help="skip ToolGym's process backend")
    args = parser.parse_args()
    if args.install and not Path(args.peer_python).exists():
        install_peer(str(Path(args.peer_python).parent.parent))
    why = peer_problem(args.peer_python)
    if why is not None:
        print(f"peer_openenv: skipped: OpenEnv cannot run here: {why}")
        return 0
    docker_why = docker_problem()
    if docker_why is not None:
        print(f"peer_openenv: ToolGym's docker backend cannot run ({docker_why}); the process backend only")
    print_header("ToolGym vs OpenEnv: HTTP reset/step latency, one client loop, one run", {
        "episodes": args.episodes, "code steps/episode": args.steps, "rounds": args.rounds, "settle_s": args.settle,
        "peer": f"{args.peer_python} ({peer_version(args.peer_python)})",
        "client": "httpx.Client keep-alive, sequential", "servers": "child processes, uvicorn asyncio+h11",
    })

    def tg_fc_ok(body: Any) -> bool:
        return bool(body.get("reward") == 1.0)

    def tg_code_ok(body: Any) -> bool:
        return "328350" in body["observation"]["messages"][0]["content"]

    def oe_echo_ok(body: Any) -> bool:
        return "hello" in json.dumps(body["observation"])

    def oe_code_ok(body: Any) -> bool:
        return "328350" in body["observation"]["stdout"]

    backends = (["docker"] if docker_why is None else []) + ([] if args.no_process_backend else ["process"])
    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        servers = [SubprocessServer(b, tmp, f"peer-{b}", warm_pool=2) for b in backends]
        leftovers: list[str] = []
        try:
            for s in servers:
                s.start()
                print(f"toolgym   {s.backend_name}: {' '.join(s.cmd)}")
            codemath_task = httpx.get(servers[0].base_url + f"/v1/envs/{CODEMATH}/tasks",
                                      params={"split": "train", "limit": 1}).json()["tasks"][0]["id"]
            with PeerServer(args.peer_python, "echo_app", tmp) as echo, PeerServer(args.peer_python, "coding_app",
                                                                                   tmp) as coding:
                print(f"openenv   {' '.join(echo.cmd)}\nopenenv   {' '.join(coding.cmd)}")
                trivial = [toolgym_system(f"ToolGym FunctionCall ({s.backend_name})", s.base_url, FUNCTIONCALL,
                                          FUNCTIONCALL_TASK, FUNCTIONCALL_ACTION, args.settle, tg_fc_ok)
                           for s in servers[:1]]
                trivial.append(openenv_system("OpenEnv echo (HTTP)", echo.base_url, ECHO_ACTION, oe_echo_ok))
                code = [toolgym_system(f"ToolGym CodeMath ({s.backend_name})", s.base_url, CODEMATH, codemath_task,
                                       CODEMATH_ACTION, args.settle, tg_code_ok) for s in servers]
                code.append(openenv_system("OpenEnv coding (HTTP)", coding.base_url, CODE_ACTION, oe_code_ok))
                res_trivial = compare(trivial, args.episodes, 1, args.rounds)
                res_code = compare(code, args.episodes, args.steps, args.rounds)
                ws_echo = ws_measure(args.peer_python, echo.base_url, ECHO_ACTION, args.episodes, 1)
                ws_code = ws_measure(args.peer_python, coding.base_url, CODE_ACTION, args.episodes, args.steps)
        finally:
            for s in servers:
                s.stop()
                if s.leftover_after_stop:
                    leftovers.append(f"{s.instance}: {s.leftover_after_stop}")

    rows = []
    for res in (res_trivial, res_code):
        for name, lat in res.items():
            for op in ("reset", "step", "close"):
                if lat.get(op):
                    rows.append(latency_row(f"{name}: {op}", lat[op]))
    for name, lat in (("OpenEnv echo (WebSocket session)", ws_echo), ("OpenEnv coding (WebSocket session)", ws_code)):
        for op in ("connect", "reset", "step"):
            rows.append(latency_row(f"{name}: {op}", lat[op]))
    table(LATENCY_HEADERS, rows, "Latency per request (ms)")

    def p50(res: dict[str, dict[str, list[float]]], name: str, op: str) -> float:
        return summarize(res[name][op])["p50"]

    ratio_rows = []
    tg_fc = trivial[0].name
    for op in ("reset", "step"):
        a, b = p50(res_trivial, tg_fc, op), p50(res_trivial, "OpenEnv echo (HTTP)", op)
        ratio_rows.append([f"trivial {op}: {tg_fc} / OpenEnv echo (HTTP)", f"{ms(a)} / {ms(b)} ms", ratio(a, b)])
    for s in code[:-1]:
        for op in ("reset", "step"):
            a, b = p50(res_code, s.name, op), p50(res_code, "OpenEnv coding (HTTP)", op)
            ratio_rows.append([f"code {op}: {s.name} / OpenEnv coding (HTTP)", f"{ms(a)} / {ms(b)} ms", ratio(a, b)])
    a, b = p50(res_trivial, tg_fc, "step"), summarize(ws_echo["step"])["p50"]
    ratio_rows.append([f"trivial step: {tg_fc} / OpenEnv echo (WebSocket)", f"{ms(a)} / {ms(b)} ms", ratio(a, b)])
    a, b = p50(res_code, code[0].name, "step"), summarize(ws_code["step"])["p50"]
    ratio_rows.append([f"code step: {code[0].name} / OpenEnv coding (WebSocket)", f"{ms(a)} / {ms(b)} ms",
                       ratio(a, b)])
    table(["ratio (same run, p50; >1 means ToolGym is slower)", "values", "ratio"], ratio_rows, "Ratios")
    print("\ncontainers left behind: " + ("; ".join(leftovers) if leftovers else "none (checked by label)"))
    print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
