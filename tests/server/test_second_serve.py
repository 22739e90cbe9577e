"""A second ``toolgym serve`` never harms a live one; a crashed one's leftovers are removed.

Real ``toolgym serve`` processes on loopback, real Docker. A second server on a busy port used
to take the live one's instance name, remove its warm pool and its live episodes' sandboxes,
and only then fail to bind. Now it binds first and fails at once; a second server given the
live one's instance id fails on the instance lock; neither touches a container. A server killed
with SIGKILL leaves containers behind, and the next server to start removes them (its lock is
free), while it leaves live servers' containers alone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_kit import ServeProcess
from server_kit import WITNESS_ACTION, WITNESS_TASK, docker, reset, state, step

from toolgym.server.embedded import free_port
from toolgym.server.instance import InstanceLock, sweep_orphans
from toolgym.server.sandbox.base import SandboxSpec

pytestmark = pytest.mark.docker


def serve(tmp: Path, image: str, port: int, **env: str) -> ServeProcess:
    """A Docker-backed server with a warm pool of one and its own database, on ``port``."""
    return ServeProcess(tmp, "--backend", "docker", "--warm-pool", "1", "--db", str(tmp / f"db-{port}.sqlite"),
                        port=port, env={"TOOLGYM_SANDBOX_IMAGE": image, **env})


def instances(tmp: Path) -> dict[str, dict[str, Any]]:
    """The lock files in the test's instance dir, by instance."""
    out = {}
    for path in (tmp / "instances").glob("*.lock"):
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        out[info["instance"]] = info
    return out


def container_ids(instance: str) -> set[str]:
    from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED

    with docker() as client:
        found = client.api.containers(all=True, quiet=True,
                                      filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance}"]})
    return {c["Id"] for c in found}


def wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


class Started:
    """What a test started: servers, and the instances whose containers teardown removes."""

    def __init__(self) -> None:
        self.servers: list[ServeProcess] = []
        self.instances: set[str] = set()


@pytest.fixture
def started(tmp_path: Path, sandbox_image: str) -> Iterator[Started]:
    """Teardown kills what still runs (by pid) and removes the containers of every instance
    these servers had (all made by this test)."""
    from toolgym.server.sandbox.docker import DockerBackend

    record = Started()
    yield record
    record.instances.update(instances(tmp_path))
    for server in record.servers:
        server.kill9()
    backend = DockerBackend(image=sandbox_image, instance="cleanup")
    try:
        for instance in record.instances:
            backend.remove_owned(instance)
    finally:
        backend.close()


def test_a_second_serve_harms_no_live_server_and_a_crashed_ones_leftovers_go(
    tmp_path: Path, sandbox_image: str, started: Started
) -> None:
    servers = started.servers
    port = free_port()
    first = serve(tmp_path, sandbox_image, port)
    servers.append(first)
    first.wait_ready()
    ((instance, info),) = instances(tmp_path).items()
    started.instances.add(instance)
    assert info["pid"] == first.proc.pid and str(port) in instance
    with httpx.Client(base_url=first.base_url, timeout=60) as client:
        episode_id = reset(client, WITNESS_TASK)["episode_id"]
        wait_for(lambda: len(container_ids(instance)) == 2, 60, "the episode's sandbox and one warm one")
        before = container_ids(instance)

        # The same port: refused at bind, before any container is touched.
        same_port = serve(tmp_path, sandbox_image, port)
        servers.append(same_port)
        assert same_port.wait_exit(60) == 1
        message = same_port.log()
        assert f"cannot listen on 127.0.0.1:{port}" in message and "nothing was started or removed" in message
        assert container_ids(instance) == before

        # Another port but the live server's instance id: refused at the instance lock.
        same_id = serve(tmp_path, sandbox_image, free_port(), TOOLGYM_INSTANCE_ID=instance)
        servers.append(same_id)
        assert same_id.wait_exit(120) == 3
        assert "is in use by a live server" in same_id.log() and f"pid {first.proc.pid}" in same_id.log()
        assert container_ids(instance) == before
        assert set(instances(tmp_path)) == {instance}

        # The first server's episode still steps, on the same sandbox; its warm pool is intact.
        result = step(client, episode_id, WITNESS_ACTION)
        assert result["info"]["status"] == "ok", result
        assert state(client, episode_id)["turn"] == 1
        assert container_ids(instance) == before

    # Crash the first server: its containers stay behind ...
    os.kill(first.proc.pid, signal.SIGKILL)
    first.wait_exit(30)
    assert container_ids(instance) == before
    # ... and the next server to start removes them.
    third = serve(tmp_path, sandbox_image, free_port())
    servers.append(third)
    third.wait_ready()
    assert container_ids(instance) == set(), "the crashed server's sandboxes are removed"
    (third_instance,) = instances(tmp_path)
    started.instances.add(third_instance)
    assert third_instance != instance
    wait_for(lambda: len(container_ids(third_instance)) == 1, 60, "the new server's warm sandbox")

    third.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises SIGTERM once its graceful shutdown (the app's included) is done
    assert third.wait_exit(120) in (0, -signal.SIGTERM)
    assert container_ids(third_instance) == set() and instances(tmp_path) == {}


def test_the_sweep_spares_live_instances_and_unknown_ones(tmp_path: Path, sandbox_image: str) -> None:
    """In process: a lock held by a live owner, or no lock file at all, means hands off."""
    from toolgym.server.sandbox.docker import DockerBackend

    directory = tmp_path / "instances"
    live, dead, unknown = (f"sweep-test-{name}-{os.getpid()}" for name in ("live", "dead", "unknown"))
    backends = {name: DockerBackend(image=sandbox_image, instance=name) for name in (live, dead, unknown)}
    try:
        for backend in backends.values():
            backend.create(SandboxSpec(labels={"toolgym.episode": "sweep-test"}))
        live_lock = InstanceLock(live, directory)
        live_lock.acquire("docker", 1)
        dead_lock = InstanceLock(dead, directory)
        dead_lock.acquire("docker", 2)
        dead_lock._handle.close()  # type: ignore[union-attr]  # as a killed process would: file stays, lock goes
        with pytest.raises(Exception, match="is in use by a live server"):
            InstanceLock(live, directory).acquire("docker", 3, wait_s=0.2)
        sweeper = InstanceLock(f"sweep-test-sweeper-{os.getpid()}", directory)
        sweeper.acquire("docker", 4)
        assert sweep_orphans(backends[dead], sweeper) == 1
        assert (len(container_ids(live)), len(container_ids(dead)), len(container_ids(unknown))) == (1, 0, 1)
        assert {p.name for p in directory.glob("*.lock")} == {live_lock.path.name, sweeper.path.name}
        live_lock.release()
        sweeper.release()
        assert list(directory.glob("*.lock")) == []
    finally:
        for name, backend in backends.items():
            backend.remove_owned(name)
            backend.close()
