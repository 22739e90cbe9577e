"""The entry point without Ray: ``EntryPoint`` in front of two real servers on loopback.

A body over the entry point's limit is refused before it is read whole (413). A replica that
refuses a reset (503 ``at_capacity``) passes it on to the other one, so a full replica never
fails a reset the fleet could take; a replica whose server stops is lost at the first call
that finds its port closed, and that call answers ``503 sandbox_error`` at once. The Ray
fleet's own tests (test_ray_fleet.py) kill and hang replicas that are Ray actors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from toolgym.client import EnvClient
from toolgym.client._routing import replica_of
from toolgym.errors import SandboxError
from toolgym.fleet.placement import ReplicaInfo
from toolgym.fleet.proxy import EntryPoint, create_entry_app
from toolgym.server.embedded import EmbeddedServer

FUNCTIONCALL = "toolgym/FunctionCall-v0"


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
