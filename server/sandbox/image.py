"""``toolgym build-image``: build the sandbox image, with or without a container registry.

Where a registry answers, the base is ``python:3.11-slim``. Where none does (this project's
CI), the base is a Debian bookworm rootfs made by ``debootstrap`` and loaded with
``docker import``; it already includes python3, numpy and sympy from Debian, so the build
needs no network at all.

A build is skipped when the image is current: its ``toolgym.context-hash`` label is the
hash of everything that goes into it (the Dockerfile and the base image's id), so running
``toolgym build-image`` on every test run costs a second, and an edit to the Dockerfile or a
new base image rebuilds it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolgym._version import __version__

__all__ = [
    "CONTEXT_LABEL", "DEFAULT_IMAGE", "LOCAL_BASE", "REGISTRY_BASE", "build_sandbox_image", "context_hash",
    "ensure_image", "ensure_local_base", "image_context_hash",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "toolgym-sandbox:latest"
REGISTRY_BASE = "python:3.11-slim"
LOCAL_BASE = "toolgym-base:bookworm"
DEBIAN_PACKAGES = "python3,python3-numpy,python3-sympy"
DOCKERFILE = Path(__file__).with_name("Dockerfile.sandbox")
CONTEXT_LABEL = "toolgym.context-hash"


def _has_image(client: Any, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _try_pull(client: Any, ref: str, say: Callable[[str], None]) -> bool:
    repo, _, tag = ref.partition(":")
    try:
        client.images.pull(repo, tag=tag or "latest")
        return True
    except Exception as exc:
        say(f"cannot pull {ref} ({type(exc).__name__}: no registry reachable); using a local Debian rootfs")
        return False


def ensure_local_base(client: Any, say: Callable[[str], None], *, rebuild: bool = False) -> str:
    """Make ``toolgym-base:bookworm`` with debootstrap + docker import, unless it exists."""
    if not rebuild and _has_image(client, LOCAL_BASE):
        say(f"using existing local base {LOCAL_BASE}")
        return LOCAL_BASE
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            say("installing debootstrap from Debian's archive")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, env=env)
            debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            raise RuntimeError("no registry base and no debootstrap: install debootstrap (as root) and retry")
    if os.geteuid() != 0:
        raise RuntimeError("building the offline base image with debootstrap needs root")
    with tempfile.TemporaryDirectory(prefix="toolgym-rootfs-") as root:
        say(f"debootstrap bookworm with {DEBIAN_PACKAGES} (about 2 minutes)")
        subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={DEBIAN_PACKAGES}", "bookworm", root],
            check=True, stdout=subprocess.DEVNULL,
        )
        say(f"importing the rootfs as {LOCAL_BASE}")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        repo, _, tag = LOCAL_BASE.partition(":")
        client.api.import_image_from_stream(tar.stdout, repository=repo, tag=tag)
        if tar.wait() != 0:
            raise RuntimeError("tar of the rootfs failed")
    return LOCAL_BASE


def context_hash(dockerfile: bytes, base_id: str) -> str:
    """The hash of what goes into the sandbox image: the Dockerfile's bytes and the id of its base image.

    The base is the one it starts FROM, by id, not name: a rebuilt base under the same tag is a
    new base. Equal hashes mean a rebuild would make the same image.
    """
    digest = hashlib.sha256()
    for part in (b"toolgym-sandbox-image/1", dockerfile, base_id.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def image_context_hash(client: Any, ref: str) -> str | None:
    """The context hash ``ref`` was built from, or None when it is missing or has no label."""
    import docker.errors

    try:
        labels = client.images.get(ref).labels or {}
    except docker.errors.ImageNotFound:
        return None
    value = labels.get(CONTEXT_LABEL)
    return str(value) if value else None


def _resolve_base(client: Any, base: str | None, say: Callable[[str], None]) -> str:
    """The base to build FROM, present locally afterwards.

    Without ``base``: a base already here (``python:3.11-slim``, else the local Debian one), so a
    current image is recognised without touching the network; else a pull, else a new local
    Debian rootfs.
    """
    if base is None:
        for ref in (REGISTRY_BASE, LOCAL_BASE):
            if _has_image(client, ref):
                return ref
        return REGISTRY_BASE if _try_pull(client, REGISTRY_BASE, say) else ensure_local_base(client, say)
    if not _has_image(client, base) and not _try_pull(client, base, say):
        raise RuntimeError(f"base image {base} is neither here nor pullable")
    return base


def build_sandbox_image(
    client: Any,
    *,
    tag: str = DEFAULT_IMAGE,
    base: str | None = None,
    say: Callable[[str], None] = print,
    force: bool = False,
) -> str:
    """Build the sandbox image and tag it ``tag`` and ``toolgym-sandbox:<version>``, unless ``tag`` is current.

    Current means the same context hash, and ``force`` false: then only the version tag is made
    sure of, in about a second, so callers may run this every time.
    """
    base = _resolve_base(client, base, say)
    dockerfile = DOCKERFILE.read_bytes()
    wanted = context_hash(dockerfile, client.images.get(base).id)
    repo = tag.partition(":")[0]
    if not force and image_context_hash(client, tag) == wanted:
        image = client.images.get(tag)
        image.tag(repo, tag=__version__)
        say(f"{tag} is current ({image.short_id}, built from {base} and this Dockerfile); nothing to build")
        return tag
    say(f"building {tag} from {base}")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    image, logs = client.images.build(
        fileobj=context, custom_context=True, buildargs={"BASE": base}, tag=tag, rm=True, forcerm=True,
        labels={"toolgym.version": __version__, CONTEXT_LABEL: wanted},
    )
    for entry in logs:
        text = str(entry.get("stream", "")).strip()
        if text and not text.startswith("--->"):
            log.debug("build: %s", text)
    image.tag(repo, tag=__version__)
    say(f"built {tag} ({image.short_id})")
    return tag


def ensure_image(image: str, say: Callable[[str], None] = print) -> None:
    """Build the sandbox image ``image`` when the engine answers and the image is missing.

    What ``toolgym serve``, ``toolgym demo`` and each Ray replica (on its own node's engine) do
    before serving, so a first start on a fresh machine needs no separate ``build-image``.
    """
    from toolgym.server.sandbox.docker import docker_client

    client = docker_client()
    try:
        try:
            client.images.get(image)
            return
        except Exception:
            say(f"sandbox image {image} is missing; building it (once)")
        build_sandbox_image(client, tag=image, say=say)
    finally:
        client.close()
