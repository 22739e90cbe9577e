"""Choosing the sandbox backend: the isolation tier asked for, else Docker when an engine answers, else processes."""

from __future__ import annotations

import logging

from toolgym.errors import SandboxError
from toolgym.server.sandbox.base import SandboxBackend
from toolgym.server.settings import Settings

__all__ = ["docker_problem", "docker_reachable", "isolation_of", "select_backend"]

log = logging.getLogger(__name__)


def docker_reachable() -> bool:
    """Whether a Docker engine answers a ping within 5 s; never raises, so callers can use it to pick a backend."""
    try:
        from toolgym.server.sandbox.docker import docker_client

        client = docker_client(timeout_s=5)
        try:
            client.ping()
            return True
        finally:
            client.close()
    except Exception:
        return False


def docker_problem(image: str) -> str | None:
    """None when Docker sandboxes can run here (an engine answers and ``image`` exists).

    Else the reason why not, naming the fix.
    """
    if not docker_reachable():
        return "no Docker engine is reachable"
    from toolgym.server.sandbox.docker import docker_client

    client = docker_client()
    try:
        client.images.get(image)
    except Exception:
        return f"no sandbox image {image} (run `toolgym build-image`)"
    finally:
        client.close()
    return None


def isolation_of(backend: SandboxBackend) -> str:
    """The isolation tier a backend gives, as ``/v1/version`` reports it: container, namespace or process."""
    return {"docker": "container", "namespace": "namespace"}.get(backend.name, "process")


def select_backend(settings: Settings) -> SandboxBackend:
    """The backend ``settings.isolation`` names, else ``settings.backend``'s (``auto``: Docker if reachable).

    ``Settings.validate`` refuses an isolation tier that contradicts the backend.
    """
    if settings.isolation == "namespace":
        from toolgym.server.sandbox.namespace import NamespaceBackend

        try:
            namespaced: SandboxBackend = NamespaceBackend(
                image=settings.sandbox_image, instance=settings.instance,
                start_timeout_s=settings.sandbox_start_timeout_s,
                episodes_per_host=settings.ns_episodes_per_host, host_max_episodes=settings.ns_host_max_episodes,
            )
        except Exception as exc:
            raise SandboxError(f"cannot reach the Docker engine: {exc}") from exc
        namespaced.check()
        return namespaced
    choice = {"container": "docker", "process": "process"}.get(settings.isolation, settings.backend)
    if choice == "auto":
        choice = "docker" if docker_reachable() else "process"
        log.info("sandbox backend: %s (auto)", choice)
    if choice == "docker":
        from toolgym.server.sandbox.docker import DockerBackend

        try:
            backend: SandboxBackend = DockerBackend(
                image=settings.sandbox_image, instance=settings.instance,
                start_timeout_s=settings.sandbox_start_timeout_s,
                channel=settings.sandbox_channel, channel_dir=settings.sandbox_channel_dir or None,
            )
        except Exception as exc:
            raise SandboxError(f"cannot reach the Docker engine: {exc}") from exc
        backend.check()
        return backend
    from toolgym.server.sandbox.process import ProcessBackend

    return ProcessBackend(start_timeout_s=settings.sandbox_start_timeout_s)
