"""The server as a container (the README's recipe): build the image from the top-level
Dockerfile, run it with the host engine's socket, play an episode through it, stop it, and
check it removed every sandbox it made.

The build is offline-capable (FROM the Debian base ``toolgym build-image`` imports) and takes
a few minutes on a new machine (dependencies from PyPI), seconds once its layers are cached.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import count_containers, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
TAG = "toolgym-server:test"


def _context() -> io.BytesIO:
    """The build context: the repo's tracked and new files, plus this host's CA bundle (the
    build's pip must trust what the host trusts, e.g. an intercepting proxy)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in files:
            if name.startswith(("tests/", "bench/", ".git")) or not (ROOT / name).is_file():
                continue
            tar.add(ROOT / name, arcname=name)
        if HOST_CA.exists():
            tar.add(HOST_CA, arcname="deploy/ca/host-bundle.crt")
    buf.seek(0)
    return buf


@pytest.fixture(scope="module")
def server_image() -> str:
    from toolgym.server.sandbox.docker import docker_client
    from toolgym.server.sandbox.image import LOCAL_BASE, REGISTRY_BASE

    client = docker_client(timeout_s=1800)
    try:
        base = REGISTRY_BASE
        try:
            client.images.get(REGISTRY_BASE)
        except Exception:
            base = LOCAL_BASE
        client.images.build(fileobj=_context(), custom_context=True, tag=TAG, buildargs={"BASE": base},
                            rm=True, forcerm=True, labels={"toolgym.role": "server-image-test"})
    finally:
        client.close()
    return TAG


def test_server_container_serves_episodes_and_cleans_up(server_image: str) -> None:
    from toolgym.server.sandbox.docker import docker_client

    instance = f"server-image-test-{uuid.uuid4().hex[:6]}"
    port = free_port()
    client = docker_client()
    container: Any = None
    try:
        container = client.containers.run(
            server_image, detach=True, name=instance,
            labels={"toolgym.managed": "1", "toolgym.instance": f"{instance}-server"},
            environment={"TOOLGYM_API_KEYS": "image-key", "TOOLGYM_INSTANCE_ID": instance,
                         "TOOLGYM_WARM_POOL_SIZE": "1"},
            ports={"8000/tcp": ("127.0.0.1", port)},
            volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, container.logs(tail=40).decode()
            time.sleep(0.5)
        headers = {"Authorization": "Bearer image-key"}
        assert httpx.get(f"{base}/v1/envs", timeout=10).status_code == 401
        eid = httpx.post(f"{base}/v1/episodes", json={"env_id": "toolgym/ToolUse-v0", "task_id": "tu-single-1"},
                         headers=headers, timeout=60).json()["episode_id"]
        call = '<tool_call>\n{"name": "get_city_info", "arguments": {"city": "Varnholt"}}\n</tool_call>'
        step = httpx.post(f"{base}/v1/episodes/{eid}/step", json={"action": call}, headers=headers, timeout=60).json()
        assert step["reward"] == 1.0 and "48210" in step["observation"]["messages"][0]["content"]
        assert count_containers(instance) >= 1  # the episode's sandbox (and the warm pool) on the host engine
        container.stop(timeout=60)
        assert "Application shutdown complete" in container.logs(tail=20).decode()
        assert count_containers(instance) == 0
    finally:
        if container is not None:
            container.remove(force=True)
        from toolgym.server.sandbox.docker import DockerBackend

        DockerBackend(image="unused", instance=instance, client=client).remove_owned(instance)
        client.close()
