"""A real two-node Ray cluster on this machine, and ``toolgym serve --ray`` fleets on it.

The cluster is two ``ray start`` nodes (a head with the custom resource ``node0``, a second
node joined with ``--address`` and ``node1``), each with its own ``--temp-dir``, one CPU, a
small object store and no dashboard. It is stopped by ending exactly the processes it started
(``fleet_kit.cluster_pids``); ``ray stop`` is never called: it ends every Ray process of the
user, another test run's included.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fleet_kit import RAY, RAY_ENV, START_TIMEOUT_S, TOOLGYM, Fleet, RayCluster, cluster_pids, end_processes

from toolgym.server.embedded import free_port


def ray_start(args: list[str]) -> None:
    """``ray start ARGS``, bounded; a failure shows what Ray said."""
    done = subprocess.run([RAY, "start", *args], timeout=START_TIMEOUT_S, env=RAY_ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"ray start {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """Per module: the nodes are gone before the rest of the suite runs (idle Ray is not free)."""
    root = tempfile.mkdtemp(prefix="tgray-", dir="/tmp")  # Ray's socket paths must stay short
    head, worker = f"{root}/h", f"{root}/w"
    port = free_port()
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats"]
    try:
        ray_start(["--head", "--port", str(port), "--temp-dir", head, "--include-dashboard=false",
                   "--resources", json.dumps({"node0": 1}), *common])
        ray_start(["--address", f"127.0.0.1:{port}", "--temp-dir", worker, "--resources", json.dumps({"node1": 1}),
                   *common])
        yield RayCluster(address=f"127.0.0.1:{port}", temp_dirs=[head, worker])
    finally:
        end_processes(cluster_pids([head, worker]))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet_factory(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Fleet]]:
    """Start ``toolgym serve --ray`` fleets (ended at the module's end) and wait until each is ready."""
    started: list[Fleet] = []
    tmp_path = tmp_path_factory.mktemp("fleet")

    def start(*extra: str, replicas: int = 2, backend: str = "process") -> Fleet:
        port = free_port()
        log = tmp_path / f"fleet-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [TOOLGYM, "serve", "--ray", ray_cluster.address, "--replicas", str(replicas), "--port", str(port),
                 "--backend", backend, "--replica-host", "127.0.0.1", "--warm-pool", "0", "--log-level", "warning",
                 *extra],
                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=RAY_ENV)
        fleet = Fleet(f"http://127.0.0.1:{port}", process, log)
        started.append(fleet)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"toolgym serve --ray exited {process.returncode}:\n{log.read_text()}"
            try:
                if httpx.get(f"{fleet.base_url}/readyz", timeout=2.0).status_code == 200:
                    return fleet
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the fleet was not ready in {START_TIMEOUT_S:g} s:\n{log.read_text()}"
            time.sleep(0.5)

    yield start
    for fleet in started:
        if fleet.process.poll() is None:
            fleet.process.send_signal(signal.SIGTERM)
            try:
                fleet.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                fleet.process.kill()
                fleet.process.wait(timeout=10)
