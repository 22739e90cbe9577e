"""The entry point without Ray: ``EntryPoint`` in front of two real servers on loopback.

A body over the entry point's limit is refused before it is read whole (413). A replica that
refuses a reset (503 ``at_capacity``) passes it on to the other one, so a full replica never
fails a reset the fleet could take; a replica whose server stops is lost at the first call
that finds its port closed, and that call answers ``503 sandbox_error`` at once. The Ray
fleet's own tests (test_ray_fleet.py) kill and hang replicas that are Ray actors. With a
store the replicas share, a killed replica's episode goes on on another replica, rebuilt by
replay: its next step sees the state its earlier steps made.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet_kit import TOOLGYM

from toolgym.client import EnvClient
from toolgym.client._routing import replica_of
from toolgym.errors import SandboxError
from toolgym.fleet.entry_app import create_entry_app
from toolgym.fleet.placement import ReplicaInfo
from toolgym.fleet.proxy import EntryPoint
from toolgym.server.embedded import EmbeddedServer, free_port

FUNCTIONCALL = "toolgym/FunctionCall-v0"
CODEMATH = "toolgym/CodeMath-v0"


def info(index: int, server: Any) -> ReplicaInfo:
    return ReplicaInfo(index=index, replica=server.manager.replica, base_url=server.base_url, pid=0,
                       node_id="local", node_ip="127.0.0.1")


def test_a_refused_reset_moves_on_and_a_stopped_replica_is_lost_at_once(server_factory: Callable[..., Any]) -> None:
    a = server_factory("process", warm_pool_size=0)
    b = server_factory("process", warm_pool_size=0, max_live_episodes=1)  # refuses its second live episode
    # Health checks far apart: here the call itself finds the replica gone.
    entry = EntryPoint([info(0, a), info(1, b)], check_interval_s=60.0, max_request_bytes=4096)
    with EmbeddedServer(create_entry_app(entry)) as server, \
            httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        def reset() -> str:
            r = client.post("/v1/episodes", json={"env_id": FUNCTIONCALL, "options": {"split": "train"}})
            assert r.status_code == 201, r.text
            return str(r.json()["episode_id"])

        big = client.post("/v1/episodes", json={"env_id": FUNCTIONCALL, "options": {"pad": "x" * 8192}})
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large", big.text

        first, second = reset(), reset()
        assert {replica_of(first), replica_of(second)} == {a.manager.replica, b.manager.replica}
        on_b = first if replica_of(first) == b.manager.replica else second
        # b is full now: every further reset lands on a, whoever's turn it is.
        assert {replica_of(reset()) for _ in range(4)} == {a.manager.replica}

        b.stop()
        started = time.monotonic()
        r = client.post(f"/v1/episodes/{on_b}/step", json={"action": "No tool needed."})
        assert time.monotonic() - started < 2.0 and r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "sandbox_error" and error["retryable"] is True, error
        assert error["details"] == {"retry_after_s": 1.0, "replica": b.manager.replica, "episode_lost": True,
                                    "episode_id": on_b}, error
        rows = {row["replica"]: row for row in client.get("/v1/version").json()["replicas"]}
        assert rows[b.manager.replica]["alive"] is False and "refused" in rows[b.manager.replica]["reason"], rows
        assert {replica_of(reset()) for _ in range(2)} == {a.manager.replica}

        # The client library with its default retry policy: no backoff on an episode that is gone.
        with EnvClient(server.base_url) as lib:
            started = time.monotonic()
            with pytest.raises(SandboxError) as caught:
                lib.step(on_b, "No tool needed.")
            assert caught.value.retryable and caught.value.details["episode_lost"] is True
            assert time.monotonic() - started < 1.0, "the client retried a call on a lost episode"


def serve(tmp: Path, db: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``toolgym serve`` in a process of its own (so that it can be killed), on the store ``db``."""
    port = free_port()
    with open(tmp / f"serve-{port}.log", "wb") as log:
        process = subprocess.Popen([TOOLGYM, "serve", "--backend", "process", "--port", str(port), "--warm-pool", "0",
                                    "--db", str(db), "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def test_with_a_shared_store_a_killed_replicas_episodes_are_rebuilt_on_another(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    servers = [serve(tmp_path, db) for _ in range(2)]
    try:
        infos = []
        for index, (process, url) in enumerate(servers):
            deadline = time.monotonic() + 90.0
            while True:
                assert process.poll() is None, (tmp_path / f"serve-{url.rsplit(':', 1)[1]}.log").read_text()
                try:
                    if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{url} did not start"
                time.sleep(0.3)
            token = httpx.get(f"{url}/v1/version", timeout=10.0).json()["replica"]
            infos.append(ReplicaInfo(index=index, replica=token, base_url=url, pid=process.pid, node_id="local",
                                     node_ip="127.0.0.1"))
        entry = EntryPoint(infos, check_interval_s=60.0, rebuild_lost=True)
        with EmbeddedServer(create_entry_app(entry)) as server, EnvClient(server.base_url) as client:
            episodes = [client.reset(CODEMATH, options={"split": "train", "stateful": True}) for _ in range(2)]
            victim = next(e.episode_id for e in episodes if replica_of(e.episode_id) == infos[1].replica)
            first = client.step(victim, "```python\nx = 6 * 7\nprint(x)\n```")
            assert "42" in str(first.observation), first.observation
            servers[1][0].kill()  # SIGKILL: no shutdown, its live episodes stay live in the store
            servers[1][0].wait(timeout=10)
            # The next step on the victim's episode is replayed on the survivor: the cell's state is back.
            second = client.step(victim, "```python\nprint(x + 1)\n```")
            assert "43" in str(second.observation), second.observation
            row = {r["replica"]: r for r in client.version()["replicas"]}[infos[1].replica]
            assert row["alive"] is False
            assert client.episode(victim)["episode_id"] == victim
    finally:
        for process, _ in servers:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
