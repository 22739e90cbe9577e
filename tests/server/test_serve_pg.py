"""Two servers on one PostgreSQL database: a real ``toolgym serve --db postgresql://...`` process
(A, so it can be killed) and one in this process (B, the ``farm_fn`` fixture, quicker to start).

Replica B reads what replica A wrote (an episode's state, the listing, ``toolgym export``), but
while A lives B never takes A's live episode: not at its start-up sweep, not by its reaper, not
on a request for it (503, retryable, naming A's replica); A goes on playing it. Once A is killed
(``kill -9``), B takes the episode over on its next request, rebuilt by replay, and continues it.
The process backend and CodeMath episodes (deterministic code), so no Docker engine is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_kit import terminate_lease
from serve_kit import ServeProcess
from test_resume import BITS_CODE, BITS_TASK, CODEMATH, new, play

from toolgym.server.embedded import free_port

FUNCTIONCALL = "toolgym/FunctionCall-v0"
GOLD = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.slow
def test_two_servers_share_trajectories_and_not_live_episodes(pg_db: str, tmp_path: Path, farm_fn: Any) -> None:
    a = ServeProcess(tmp_path, "--backend", "process", "--warm-pool", "0", "--db", pg_db,
                     env={"TOOLGYM_INSTANCE_ID": f"pg-a-{uuid.uuid4().hex[:6]}"}).wait_ready(180)
    try:
        with a.client() as ca:
            live = new(ca, CODEMATH, BITS_TASK)
            first = play(ca, live, BITS_CODE, "k-0")
            done = new(ca, FUNCTIONCALL, "fc-weather-001")
            assert play(ca, done, GOLD)["terminated"]
        # A's live episode looks long idle: only a live holder keeps B from interrupting it.
        with psycopg.connect(pg_db, autocommit=True) as conn:
            conn.execute("UPDATE episodes SET updated = updated - 100000 WHERE id = %s", (live,))
        b = farm_fn.start("process", db_path=pg_db, warm_pool_size=0, reaper_interval_s=0.2)
        with b.client() as cb, a.client() as ca:
            # B reads A's trajectories.
            st = cb.get(f"/v1/episodes/{done}").json()
            assert st["status"] == "finished" and st["turn"] == 1 and st["steps"][0]["action"] == GOLD, st
            listed = {e["episode_id"] for e in cb.get("/v1/episodes").json()["episodes"]}
            assert {live, done} <= listed
            out = tmp_path / "export.jsonl"
            exported = subprocess.run(
                [sys.executable, "-m", "toolgym.cli", "export", "--base-url", b.base_url, "--out", str(out),
                 "--no-progress"], capture_output=True, text=True, timeout=120, check=False,
            )
            assert exported.returncode == 0, exported.stderr
            assert done in {json.loads(line)["episode_id"] for line in out.read_text().splitlines()}
            # B's start-up sweep and reaper passes left A's live episode alone; B will not take it.
            time.sleep(0.6)
            st = cb.get(f"/v1/episodes/{live}").json()
            assert st["status"] == "live" and st["turn"] == 1, st
            for r in (cb.post(f"/v1/episodes/{live}/step", json={"action": BITS_CODE}),
                      cb.delete(f"/v1/episodes/{live}")):
                assert r.status_code == 503, r.text
                error = r.json()["error"]
                assert error["code"] == "unavailable" and error["retryable"] is True, error
                assert "is live on replica" in error["message"], error
            assert play(ca, live, BITS_CODE, "k-0") == first  # A still holds it: its retry is answered
            second = play(ca, live, BITS_CODE, "k-1")
            assert second["reward"] == first["reward"] and not second["terminated"]
        a.kill9()
        with b.client() as cb:
            deadline = time.monotonic() + 30  # PostgreSQL drops A's lock once it sees A's socket close
            while True:
                r = cb.post(f"/v1/episodes/{live}/step", json={"action": "So \\boxed{20}."})
                if r.status_code != 503:
                    break
                assert time.monotonic() < deadline, f"B did not take A's episode over in 30 s: {r.text}"
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            assert r.json()["terminated"] and r.json()["reward"] == 1.0, r.json()
            st = cb.get(f"/v1/episodes/{live}").json()
            assert st["status"] == "finished" and st["turn"] == 3, st
        assert (b.manager.resumed, b.manager.replayed_steps) == (1, 2)
    finally:
        a.kill9()


def test_a_server_without_its_database_says_so(tmp_path: Path) -> None:
    """A URL nobody answers: start-up fails with the database's error, not a hang, and no password shows."""
    url = f"postgresql://nobody:pg-secret@127.0.0.1:{free_port()}/none"
    server = ServeProcess(tmp_path, "--backend", "process", "--db", url)
    try:
        assert server.wait_exit(60) != 0
    finally:
        server.kill9()
    assert "connection" in server.log().lower(), server.log(4000)
    assert "pg-secret" not in server.log(), "the URL's password was printed"


def test_the_db_url_is_kept_out_of_the_settings_repr() -> None:
    from toolgym.server import Settings

    settings = Settings(db_path="postgresql://u:pg-secret@db:5432/toolgym")
    assert "pg-secret" not in repr(settings) and settings.db_path.endswith("/toolgym")


def step_when_free(client: Any, episode_id: str, action: str) -> Any:
    """Step until the answer is not the 503 of an episode a live replica holds (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        r = client.post(f"/v1/episodes/{episode_id}/step", json={"action": action})
        if r.status_code != 503:
            return r
        assert time.monotonic() < deadline, f"the episode's holder still looks alive after 30 s: {r.text}"
        time.sleep(0.1)


def test_a_replica_that_lost_its_lock_never_writes_over_the_one_that_took_over(pg_db: str, farm_fn: Any) -> None:
    """A's lease session is cut (as by a network cut): B takes A's episode over; A's stale copy is fenced."""
    a = farm_fn.start("process", db_path=pg_db, warm_pool_size=0, reaper_interval_s=600)
    b = farm_fn.start("process", db_path=pg_db, warm_pool_size=0, reaper_interval_s=600)
    with a.client() as ca, b.client() as cb:
        live = new(ca, CODEMATH, BITS_TASK)
        first = play(ca, live, BITS_CODE)
        terminate_lease(pg_db, a.manager.replica)
        r = step_when_free(cb, live, BITS_CODE)
        assert r.status_code == 200 and r.json()["reward"] == first["reward"], r.text
        # A still holds its copy in memory; its write is fenced, and it lets the episode go.
        r = ca.post(f"/v1/episodes/{live}/step", json={"action": "So \\boxed{20}."})
        assert r.status_code == 503 and "taken over" in r.json()["error"]["message"], r.text
        r = ca.post(f"/v1/episodes/{live}/step", json={"action": "So \\boxed{20}."})
        assert r.status_code == 503 and f"is live on replica {b.manager.replica}" in r.text, r.text
        st = cb.get(f"/v1/episodes/{live}").json()
        assert st["status"] == "live" and st["turn"] == 2 and len(st["steps"]) == 2, st
        r = cb.post(f"/v1/episodes/{live}/step", json={"action": "So \\boxed{20}."})
        assert r.status_code == 200 and r.json()["terminated"] and r.json()["reward"] == 1.0, r.text
