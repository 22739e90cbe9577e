"""Acknowledged means on disk: a real server process, killed with SIGKILL under concurrent
step load, has stored every step (and every reset) it answered with a 200/201. On a SQLite file
and on PostgreSQL (``--db postgresql://...``, the ``db`` fixture) alike.

The server is ``toolgym serve`` as a child process on loopback with the process backend and
no warm pool; the load is FunctionCall episodes (reset, then the one step that ends them),
which need no sandbox, so the kill leaves no process or container behind. Writes go through
the store's writer thread and its group commits; a step whose answer left the server before
its commit returned would be missing here.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from serve_kit import ServeProcess

pytestmark = pytest.mark.slow

FUNCTIONCALL = "toolgym/FunctionCall-v0"
TASK = "fc-weather-001"
GOLD = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CLIENTS = 8
MIN_ACKED = 40
"""Steps acknowledged before the kill; fewer would make the check too weak to mean much."""


def stored(db: str) -> tuple[set[str], set[str], set[str]]:
    """Episodes with a stored first step, stored episodes, and those stored as finished after one step."""
    queries = ("SELECT episode_id FROM steps WHERE turn = 0", "SELECT id FROM episodes",
               "SELECT id FROM episodes WHERE status = 'finished' AND turn = 1")
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as pg:
            steps, episodes, finished = ({e for (e,) in pg.execute(q).fetchall()} for q in queries)
        return steps, episodes, finished
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        steps, episodes, finished = ({e for (e,) in conn.execute(q)} for q in queries)
    finally:
        conn.close()
    return steps, episodes, finished


def test_every_acknowledged_step_survives_kill_9(tmp_path: Path, db: str) -> None:
    server = ServeProcess(tmp_path, "--backend", "process", "--warm-pool", "0", "--db", db,
                          "--max-live-episodes", "512", env={"TOOLGYM_INSTANCE_ID": f"crash-{uuid.uuid4().hex[:6]}"})
    server.wait_ready(60)
    proc, base_url = server.proc, server.base_url
    acked_steps: list[str] = []
    acked_resets: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            for _ in range(10_000):  # bounded; the kill ends it long before
                if stop.is_set():
                    return
                try:
                    r = client.post("/v1/episodes", json={"env_id": FUNCTIONCALL, "task_id": TASK})
                    if r.status_code != 201:
                        return
                    episode_id = r.json()["episode_id"]
                    with lock:
                        acked_resets.append(episode_id)
                    r = client.post(f"/v1/episodes/{episode_id}/step", json={"action": GOLD})
                    if r.status_code != 200:
                        return
                    assert r.json()["terminated"] is True
                    with lock:
                        acked_steps.append(episode_id)
                except httpx.HTTPError:  # the server is gone
                    return

    threads = [threading.Thread(target=load) for _ in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked_steps) < MIN_ACKED * 3:
            assert time.monotonic() < deadline, f"only {len(acked_steps)} steps acknowledged in 60 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # mid-load: requests are in flight
        proc.wait(timeout=30)
    finally:
        stop.set()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for t in threads:
            t.join(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with lock:
        steps, resets = set(acked_steps), set(acked_resets)
    assert len(steps) >= MIN_ACKED
    stored_steps, stored_episodes, finished = stored(db)
    assert not steps - stored_steps, f"{len(steps - stored_steps)} of {len(steps)} acknowledged steps were lost"
    assert not steps - finished, "an acknowledged final step left its episode unfinished in the store"
    assert not resets - stored_episodes, f"{len(resets - stored_episodes)} acknowledged resets were lost"
    print(f"acknowledged {len(steps)} steps, {len(resets)} resets; stored {len(stored_steps)} steps")
