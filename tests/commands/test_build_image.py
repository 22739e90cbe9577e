"""``toolgym build-image`` builds only when the image is missing or stale, so scripts/test.sh
can call it on every run: a current image (same Dockerfile, same base image id) costs about a
second; a stale one (another context hash, or none) is rebuilt."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolgym._version import __version__
from toolgym.server.sandbox.image import CONTEXT_LABEL, LOCAL_BASE, context_hash, image_context_hash

TOOLGYM = str(Path(sys.executable).parent / "toolgym")


def build_image(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOLGYM, "build-image", *args], capture_output=True, text=True, timeout=900)


def test_the_hash_covers_the_dockerfile_and_the_base_id() -> None:
    one = context_hash(b"FROM x\n", "sha256:aa")
    assert one == context_hash(b"FROM x\n", "sha256:aa")
    assert one != context_hash(b"FROM x\nRUN true\n", "sha256:aa")
    assert one != context_hash(b"FROM x\n", "sha256:ab")
    assert context_hash(b"ab", "c") != context_hash(b"a", "bc")  # parts cannot slide into each other


@pytest.fixture
def tag() -> Iterator[str]:
    from toolgym.server.sandbox.docker import docker_client

    repo = f"toolgym-sandbox-test-{uuid.uuid4().hex[:8]}"
    yield f"{repo}:latest"
    client = docker_client()
    try:
        for ref in (f"{repo}:latest", f"{repo}:{__version__}"):
            try:
                client.images.remove(ref)
            except Exception:
                pass
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.slow
def test_build_image_returns_at_once_when_current_and_rebuilds_when_stale(tag: str) -> None:
    from toolgym.server.sandbox.docker import docker_client

    client: Any = docker_client()
    try:
        here = {t for image in client.images.list() for t in image.tags}
        bases = [ref for ref in ("python:3.11-slim", LOCAL_BASE) if ref in here]
        if not bases:
            pytest.skip("no base image here; the first build would need debootstrap or a registry")
        first = build_image("--tag", tag)
        assert first.returncode == 0, first.stderr
        assert f"built {tag}" in first.stdout
        built = client.images.get(tag)
        assert built.labels[CONTEXT_LABEL] == image_context_hash(client, tag)

        started = time.monotonic()
        again = build_image("--tag", tag)
        elapsed = time.monotonic() - started
        assert again.returncode == 0, again.stderr
        assert "is current" in again.stdout and "building" not in again.stdout
        assert client.images.get(tag).id == built.id
        assert elapsed < 15, f"a current image took {elapsed:.1f} s"

        # Stale: the tag now names an image built from something else (here: the base, no label).
        base = client.images.get(bases[0])
        repo, _, name = tag.partition(":")
        base.tag(repo, tag=name)
        assert image_context_hash(client, tag) is None
        stale = build_image("--tag", tag)
        assert stale.returncode == 0, stale.stderr
        assert f"built {tag}" in stale.stdout
        assert image_context_hash(client, tag) == built.labels[CONTEXT_LABEL]

        forced = build_image("--tag", tag, "--force")
        assert forced.returncode == 0 and f"built {tag}" in forced.stdout, forced.stderr
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.slow
def test_build_image_json_says_whether_it_built(tag: str) -> None:
    from toolgym.server.sandbox.docker import docker_client

    client: Any = docker_client()
    try:
        here = {t for image in client.images.list() for t in image.tags}
        if not any(ref in here for ref in ("python:3.11-slim", LOCAL_BASE)):
            pytest.skip("no base image here; the first build would need debootstrap or a registry")
        first = build_image("--tag", tag, "--json")
        assert first.returncode == 0, first.stderr
        lines = first.stdout.splitlines()
        assert len(lines) == 1, first.stdout  # the notes went to stderr
        doc = json.loads(lines[0])
        assert doc == {"tag": tag, "image_id": client.images.get(tag).id, "built": True}
        assert f"built {tag}" in first.stderr
        again = build_image("--tag", tag, "--json")
        assert again.returncode == 0 and json.loads(again.stdout) == {**doc, "built": False}
    finally:
        client.close()
