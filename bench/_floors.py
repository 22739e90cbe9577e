"""The Docker floors of ``bench/peers.py``: what the engine itself costs here, below any
environment server.

- ``cold_docker_run``: ``docker run --rm <sandbox image> true`` with the CLI, one at a time
  (the latency a reset would have without a warm sandbox, and without ToolGym's hardening);
- ``sdk_rate``: the Docker SDK's create + start + remove (force) of a container that runs
  ``sleep``, from 1 and 2 threads: the engine's container churn rate on this machine.

Every container carries ``toolgym.managed=1`` and ``toolgym.instance=<instance>``; the caller
counts what is left by those labels.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

from _common import IMAGE


def _labels(instance: str) -> dict[str, str]:
    return {"toolgym.managed": "1", "toolgym.instance": instance}


def cold_docker_run(instance: str, n: int) -> list[float]:
    """Seconds per ``docker run --rm`` (CLI), ``n`` times in a row after one untimed run."""
    cmd = ["docker", "run", "--rm", "--network", "none", "--label", "toolgym.managed=1",
           "--label", f"toolgym.instance={instance}", IMAGE, "true"]
    out: list[float] = []
    for i in range(n + 1):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        if i:
            out.append(time.perf_counter() - t)
    return out


def sdk_rate(instance: str, threads: int, per_thread: int) -> dict[str, Any]:
    """Containers created, started and removed per second by ``threads`` threads."""
    from toolgym.server.sandbox.docker import docker_client

    client = docker_client(timeout_s=120)
    errors: list[str] = []
    lat: list[float] = []

    def work() -> None:
        for _ in range(per_thread):
            try:
                t = time.perf_counter()
                c = client.api.create_container(IMAGE, command=["sleep", "60"], labels=_labels(instance),
                                                host_config=client.api.create_host_config(network_mode="none"))
                client.api.start(c["Id"])
                client.api.remove_container(c["Id"], force=True, v=True)
                lat.append(time.perf_counter() - t)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    try:
        pool = [threading.Thread(target=work) for _ in range(threads)]
        t0 = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        wall = time.perf_counter() - t0
    finally:
        client.close()
    done = len(lat)
    return {"threads": threads, "containers": done, "wall_s": wall, "per_s": done / wall, "cycle": lat,
            "errors": errors}
