"""The Docker engine restarted under load: /readyz goes false, faults are retryable 503s, and the
server recovers by itself (no restart of ToolGym).

A real server (``farm``, Docker backend, a warm pool) serves a few clients that reset, step and
close in a loop. The test stops the engine the way this machine runs it: the ``dockerd`` whose
pid is in ``TOOLGYM_DOCKERD_PIDFILE`` (default ``/var/run/docker.pid``, the daemon
scripts/ensure-docker.sh starts), SIGTERM and a bounded wait; then starts it again with the
same command line, logging to ``TOOLGYM_DOCKERD_LOG`` as ensure-docker.sh does. Meanwhile:

- while the engine is down, ``/readyz`` answers 503 and a step on a live episode (its sandbox
  died with the engine) is a retryable 503 ``sandbox_error``, never a step result;
- every step the load got answered with 200 is a real tool result (never an infra fault dressed
  as a step), every error it got is a retryable 503;
- once the engine is back, within bounds and with the same server process, ``/readyz`` answers
  200, the warm pool refills, the old episode steps again on a new sandbox, new episodes work,
  and no container is left behind at the end (the farm checks).

Marker ``chaos``: restarting the engine kills every container on it, so this never runs in the
default suite, only in scripts/slow-tests.sh (which runs nothing else at the same time). To
spare a shared engine, point ``TOOLGYM_DOCKERD_PIDFILE`` at a second dockerd of your own, started
with its own ``--data-root``, ``--exec-root``, ``--host`` socket and ``--bridge``/``--bip``: one
that shares the default ``docker0`` bridge deletes it when it stops, and the first engine's
containers and builds lose their network until that engine restarts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import WITNESS_ACTION, Server, ServerFarm, reset, state, step, tool_message

pytestmark = [pytest.mark.chaos, pytest.mark.docker]

PIDFILE = Path(os.environ.get("TOOLGYM_DOCKERD_PIDFILE", "/var/run/docker.pid"))
DOCKERD_LOG = Path(os.environ.get("TOOLGYM_DOCKERD_LOG", "/tmp/toolgym-dockerd.log"))
STOP_BOUND_S = 90.0
"""dockerd stops each container with its stop timeout (10 s) before it exits."""
START_BOUND_S = 60.0
RECOVER_BOUND_S = 60.0
CLIENTS = 3
WITNESS = {"population": 48210, "country": "Eskara", "founded": 1184}


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.2)


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; its parent (not us) reaps it.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@dataclass
class Engine:
    """The running dockerd, as found by its pidfile: enough to stop it and start it the same way."""

    pid: int
    argv: list[str]
    cwd: str

    @classmethod
    def find(cls) -> Engine:
        if os.geteuid() != 0:
            pytest.skip("restarting the Docker engine needs root")
        try:
            pid = int(PIDFILE.read_text().strip())
            argv = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if a]
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, ValueError) as exc:
            pytest.fail(f"no dockerd to restart via {PIDFILE}: {exc}")
        assert argv and Path(argv[0]).name == "dockerd", f"pid {pid} in {PIDFILE} is not dockerd: {argv}"
        return cls(pid, argv, cwd)

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        wait_until(lambda: not alive(self.pid), STOP_BOUND_S, f"dockerd {self.pid} to exit")

    def start(self) -> None:
        with open(DOCKERD_LOG, "ab") as log:  # the daemon keeps its own copy of the descriptor
            proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = proc.pid
        wait_until(engine_answers, START_BOUND_S, "the restarted engine to answer")


@dataclass
class Load:
    """A few clients resetting, stepping and closing until told to stop; what they saw."""

    server: Server
    stop: threading.Event = field(default_factory=threading.Event)
    ok_steps: int = 0
    errors: Counter[tuple[int, str, bool]] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: httpx.Response) -> bool:
        """True for a 2xx; otherwise count the error, and flag one that is not a retryable 503."""
        if response.is_success:
            return True
        try:
            error = response.json()["error"]
            key = (response.status_code, str(error["code"]), bool(error["retryable"]))
        except (ValueError, KeyError, TypeError):
            key = (response.status_code, "unreadable", False)
        with self.lock:
            self.errors[key] += 1
            if response.status_code != 503 or not key[2] or "Retry-After" not in response.headers:
                self.bad.append(f"{response.status_code} {response.text[:300]}")
        return False

    def loop(self) -> None:
        with self.server.client(timeout=120) as c:
            for _ in range(10_000):  # bounded; the stop event ends it long before
                if self.stop.is_set():
                    return
                try:
                    r = c.post("/v1/episodes", json={"env_id": "toolgym/ToolUse-v0", "task_id": "tu-single-1"})
                    if not self.record(r):
                        time.sleep(0.2)
                        continue
                    episode_id = r.json()["episode_id"]
                    for _ in range(3):
                        s = c.post(f"/v1/episodes/{episode_id}/step", json={"action": WITNESS_ACTION})
                        if self.record(s):
                            result = s.json()
                            if result["info"]["status"] != "ok" or json.loads(tool_message(result)) != WITNESS:
                                with self.lock:
                                    self.bad.append(f"a step answered 200 without the tool's result: {s.text[:300]}")
                            with self.lock:
                                self.ok_steps += 1
                    self.record(c.delete(f"/v1/episodes/{episode_id}"))
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.bad.append(f"transport error: {exc!r}")


def test_the_engine_restarted_under_load_makes_readyz_false_then_the_server_recovers(farm: ServerFarm) -> None:
    engine = Engine.find()
    server = farm.start("docker", warm_pool_size=2, max_live_episodes=16)
    with server.client(timeout=120) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60, "/readyz before the fault")
        old = reset(c, "tu-single-1")["episode_id"]
        assert step(c, old, WITNESS_ACTION)["info"]["status"] == "ok"

        load = Load(server)
        threads = [threading.Thread(target=load.loop, daemon=True) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        restarted = False
        try:
            wait_until(lambda: load.ok_steps >= 6, 60, "the load to get going")
            stopping = time.monotonic()
            engine.stop()
            stop_s = time.monotonic() - stopping
            down = c.get("/readyz")
            assert down.status_code == 503 and down.json()["status"] == "not_ready", down.text
            assert "does not answer" in down.json()["backend"]["error"]
            r = c.post(f"/v1/episodes/{old}/step", json={"action": WITNESS_ACTION})
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] in ("sandbox_error", "sandbox_timeout") and error["retryable"], error
            assert "reward" not in r.text and int(r.headers["Retry-After"]) >= 1
            assert state(c, old)["turn"] == 1, "the failed step is not on record"
            starting = time.monotonic()
            engine.start()
            restarted = True
            started = time.monotonic()
            down_s = started - stopping
            wait_until(lambda: c.get("/readyz").status_code == 200, RECOVER_BOUND_S, "/readyz after the restart")
            ready_s = time.monotonic() - started
            wait_until(lambda: server.manager.pool.ready >= 1, RECOVER_BOUND_S, "the warm pool to refill")
            pool_s = time.monotonic() - started
            steps_before = load.ok_steps
            wait_until(lambda: load.ok_steps >= steps_before + 6, RECOVER_BOUND_S, "the load to step again")
            load_s = time.monotonic() - started
        finally:
            load.stop.set()
            for t in threads:
                t.join(timeout=180)
            if not restarted and not engine_answers():
                engine.start()  # never leave the machine without its engine

        # The old episode goes on, on a new sandbox, at the turn on record; a new one works too.
        again = step(c, old, WITNESS_ACTION)
        assert again["info"]["status"] == "ok" and json.loads(tool_message(again)) == WITNESS
        assert state(c, old)["turn"] == 2
        fresh = reset(c, "tu-single-1")["episode_id"]
        assert step(c, fresh, WITNESS_ACTION)["info"]["status"] == "ok"
        for episode_id in (old, fresh):
            assert c.delete(f"/v1/episodes/{episode_id}").status_code == 204
        assert server.app.state.manager is server.manager and not server.stopped, "the same server throughout"
        print(f"\nengine restart: dockerd stopped in {stop_s:.1f} s, answered again {started - starting:.1f} s after"
              f" its start ({down_s:.1f} s down); then /readyz 200 after {ready_s:.1f} s, warm pool refilled after"
              f" {pool_s:.1f} s, load stepping again after {load_s:.1f} s; load: {load.ok_steps} steps ok,"
              f" errors {dict(load.errors)}")
        assert not load.bad, load.bad[:10]
        assert load.errors, "the load never met the fault"
