"""The server as a container (the README's recipe): build the image from the top-level
Dockerfile, run it with the host engine's socket, play an episode through it, stop it, and
check it removed every sandbox it made, and that removing it leaves no volume behind.

The build is offline-capable (FROM the Debian base ``toolgym build-image`` imports) and takes
minutes on a new machine (dependencies from PyPI). The image is cached by content: its tag
carries a hash of the build context (every file sent, the base image's id), so a later run
with the same sources skips the build entirely, and any change to a file the image is built
from makes a new image.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import count_containers, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
REPO = "toolgym-server"
ROLE = "server-image-test"
CONTEXT_LABEL = "toolgym.context-hash"
STALE_AFTER = timedelta(days=1)


def _context_files() -> list[tuple[str, Path]]:
    """(name in the build context, file on this host), sorted: the repo's tracked and new files
    but tests/, bench/ and .git, plus this host's CA bundle (the build's pip must trust what
    the host trusts, e.g. an intercepting proxy)."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    files = [(name, ROOT / name) for name in names
             if not name.startswith(("tests/", "bench/", ".git")) and (ROOT / name).is_file()]
    if HOST_CA.exists():
        files.append(("deploy/ca/host-bundle.crt", HOST_CA))
    return sorted(files)


def _context(files: list[tuple[str, Path]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in files:
            tar.add(path, arcname=name)
    buf.seek(0)
    return buf


def context_hash(files: list[tuple[str, Path]], base_id: str) -> str:
    """What the image is built from: every context file's name, mode and bytes, and the base
    image's id. Equal hashes mean a rebuild would make the same image."""
    digest = hashlib.sha256(f"toolgym-server-image/1 {base_id}".encode())
    for name, path in files:
        data = path.read_bytes()
        digest.update(f"\0{name}\0{path.stat().st_mode & 0o777:o}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _prune_old(client: Any, keep: str) -> None:
    """Remove this test's images of other contexts once they are a day old (younger ones may be
    another checkout's, in use right now); ones a container still uses stay."""
    now = datetime.now(timezone.utc)
    for image in client.images.list(filters={"label": f"toolgym.role={ROLE}"}):
        created = datetime.fromisoformat(image.attrs["Created"][:19]).replace(tzinfo=timezone.utc)
        if keep in image.tags or now - created < STALE_AFTER:
            continue
        for ref in image.tags:
            try:
                client.images.remove(ref)
            except Exception:
                pass


@pytest.fixture(scope="module")
def server_image() -> str:
    import docker.errors

    from toolgym.server.sandbox.docker import docker_client
    from toolgym.server.sandbox.image import LOCAL_BASE, REGISTRY_BASE

    client = docker_client(timeout_s=1800)
    try:
        try:
            base = client.images.get(REGISTRY_BASE)
            base_ref = REGISTRY_BASE
        except docker.errors.ImageNotFound:
            base, base_ref = client.images.get(LOCAL_BASE), LOCAL_BASE
        files = _context_files()
        digest = context_hash(files, base.id)
        tag = f"{REPO}:test-{digest[:16]}"
        try:
            cached = (client.images.get(tag).labels or {}).get(CONTEXT_LABEL) == digest
        except docker.errors.ImageNotFound:
            cached = False
        if not cached:
            client.images.build(fileobj=_context(files), custom_context=True, tag=tag,
                                buildargs={"BASE": base_ref}, rm=True, forcerm=True,
                                labels={"toolgym.role": ROLE, CONTEXT_LABEL: digest})
        _prune_old(client, keep=tag)
    finally:
        client.close()
    return tag


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
        # The Dockerfile declares VOLUME /data: without v=True each run would leave an anonymous
        # volume behind.
        container.reload()
        volumes = [m["Name"] for m in container.attrs["Mounts"] if m.get("Type") == "volume"]
        assert volumes, container.attrs["Mounts"]
        container.remove(v=True)
        container = None
        left = [name for name in volumes if client.volumes.list(filters={"name": name})]
        assert left == [], f"volumes left behind: {left}"
    finally:
        if container is not None:
            container.remove(force=True, v=True)
        from toolgym.server.sandbox.docker import DockerBackend

        DockerBackend(image="unused", instance=instance, client=client).remove_owned(instance)
        client.close()
