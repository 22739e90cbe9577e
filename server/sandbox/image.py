"""``toolgym build-image``: build the sandbox image, with or without a container registry.

Where a registry answers, the base is ``python:3.11-slim``. Where none does (this project's
CI), the base is a Debian bookworm rootfs made by ``debootstrap`` and loaded with
``docker import`` (DESIGN.md, "Offline images"); it already includes python3, numpy and sympy
from Debian, so the build needs no network at all.
"""

from __future__ import annotations

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

__all__ = ["DEFAULT_IMAGE", "LOCAL_BASE", "REGISTRY_BASE", "build_sandbox_image", "ensure_local_base"]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "toolgym-sandbox:latest"
REGISTRY_BASE = "python:3.11-slim"
LOCAL_BASE = "toolgym-base:bookworm"
DEBIAN_PACKAGES = "python3,python3-numpy,python3-sympy"
DOCKERFILE = Path(__file__).with_name("Dockerfile.sandbox")


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


def build_sandbox_image(
    client: Any,
    *,
    tag: str = DEFAULT_IMAGE,
    base: str | None = None,
    say: Callable[[str], None] = print,
) -> str:
    """Build the sandbox image and tag it ``tag`` and ``toolgym-sandbox:<version>``."""
    if base is None:
        if _has_image(client, REGISTRY_BASE) or _try_pull(client, REGISTRY_BASE, say):
            base = REGISTRY_BASE
        else:
            base = ensure_local_base(client, say)
    say(f"building {tag} from {base}")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add(DOCKERFILE, arcname="Dockerfile")
    context.seek(0)
    image, logs = client.images.build(
        fileobj=context, custom_context=True, buildargs={"BASE": base}, tag=tag, rm=True, forcerm=True,
        labels={"toolgym.version": __version__},
    )
    for entry in logs:
        text = str(entry.get("stream", "")).strip()
        if text and not text.startswith("--->"):
            log.debug("build: %s", text)
    repo = tag.partition(":")[0]
    image.tag(repo, tag=__version__)
    say(f"built {tag} ({image.short_id})")
    return tag
