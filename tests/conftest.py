"""Shared fixtures: real sandboxes, real servers on loopback, real SQLite files.

Docker tests carry the ``docker`` marker. Where no engine answers they are skipped, except
under ``CI=true``, where a missing engine or image is a failure (``.ci/run`` starts one).
Every container a test makes carries a per-test-session instance label and is removed at
teardown; the ``no_leaks`` check fails a test that leaves one behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from toolgym.envs.runner import RunRequest, RunResult
from toolgym.server.embedded import EmbeddedServer, free_port
from toolgym.server.sandbox.base import Sandbox, SandboxBackend, SandboxSpec
from toolgym.server.sandbox.select import docker_problem as find_docker_problem

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property-based tests (hypothesis, and schemathesis on top of it) share two budgets: "ci", small
# enough that every fuzz test runs in seconds in the default run, and "slow", the large one
# scripts/slow-tests.sh selects with HYPOTHESIS_PROFILE=slow. No example database: runs leave
# nothing behind in the worktree. The "ci" budget is derandomized, so the default run tries the
# same examples every time and a red CI is always reproducible; the slow run explores.
settings.register_profile("ci", max_examples=60, deadline=None, database=None, print_blob=True, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=2000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SESSION = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
IMAGE = os.environ.get("TOOLGYM_SANDBOX_IMAGE", "toolgym-sandbox:latest")


_DOCKER_PROBLEM: str | bool | None = False


def docker_problem() -> str | None:
    global _DOCKER_PROBLEM
    if _DOCKER_PROBLEM is False:
        _DOCKER_PROBLEM = find_docker_problem(IMAGE)
    return _DOCKER_PROBLEM  # type: ignore[return-value]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("docker") for item in items):
        return
    problem = docker_problem()
    if problem is None or IN_CI:  # under CI the autouse fixture below fails them instead
        return
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(autouse=True)
def _docker_required_in_ci(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") and IN_CI and docker_problem() is not None:
        pytest.fail(f"CI=true but Docker tests cannot run: {docker_problem()}")


# --- backends and runners -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_backend() -> Iterator[SandboxBackend]:
    problem = docker_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true but Docker tests cannot run: {problem}")
        pytest.skip(problem)
    from toolgym.server.sandbox.docker import DockerBackend

    backend = DockerBackend(image=IMAGE, instance=SESSION)
    yield backend
    backend.remove_owned(SESSION)
    backend.close()


@pytest.fixture(scope="session")
def process_backend() -> Iterator[SandboxBackend]:
    from toolgym.server.sandbox.process import ProcessBackend

    backend = ProcessBackend()
    yield backend
    backend.close()


def count_containers(instance: str) -> int:
    from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED, docker_client

    client = docker_client()
    try:
        return len(client.api.containers(all=True, quiet=True,
                                         filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance}"]}))
    finally:
        client.close()


def _best_backend(request: pytest.FixtureRequest) -> SandboxBackend:
    if docker_problem() is None or IN_CI:
        return request.getfixturevalue("docker_backend")  # type: ignore[no-any-return]
    return request.getfixturevalue("process_backend")  # type: ignore[no-any-return]


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A real sandbox: Docker when an engine is reachable (always under CI), else a process."""
    backend = _best_backend(request)
    box = backend.create(SandboxSpec(labels={"toolgym.episode": f"test-{uuid.uuid4().hex[:8]}"}))
    yield box
    box.close()


@pytest.fixture
def runner(sandbox: Sandbox) -> Callable[[RunRequest], RunResult]:
    """A ``Runner`` (what an env episode gets) backed by a real sandbox."""
    return sandbox.run


# --- live servers on loopback ---------------------------------------------------------------------
@dataclass
class LiveServer:
    base_url: str
    settings: Any
    app: Any
    instance: str
    stop: Callable[[], None] = lambda: None
    """Stop the server now (the fixture's teardown stops it otherwise; stopping twice is fine)."""

    @property
    def manager(self) -> Any:
        return self.app.state.manager


@pytest.fixture
def server_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., LiveServer]]:
    """Start real servers on loopback: ``server_factory(backend="docker"|"process", **settings)``.
    Each gets its own SQLite file and instance label; teardown stops it and checks that it
    left no container behind."""
    from toolgym.server import Settings, create_app

    started: list[tuple[EmbeddedServer, LiveServer, SandboxBackend]] = []

    def make(backend: str = "docker", **overrides: Any) -> LiveServer:
        instance = f"{SESSION}-{uuid.uuid4().hex[:6]}"
        port = free_port()
        base = dict(host="127.0.0.1", port=port, instance_id=instance, db_path=str(tmp_path / f"{instance}.db"),
                    warm_pool_size=1, sandbox_image=IMAGE, reaper_interval_s=0.5)
        base.update(overrides)
        settings = Settings(**base)
        sandbox_backend: SandboxBackend
        if backend == "docker":
            request.getfixturevalue("docker_backend")  # skip/fail as Docker tests do
            from toolgym.server.sandbox.docker import DockerBackend

            sandbox_backend = DockerBackend(image=IMAGE, instance=instance)
        else:
            from toolgym.server.sandbox.process import ProcessBackend

            sandbox_backend = ProcessBackend()
        app = create_app(settings, backend=sandbox_backend)
        thread = EmbeddedServer(app, port=port).start(timeout_s=60)
        live = LiveServer(base_url=f"http://127.0.0.1:{port}", settings=settings, app=app, instance=instance,
                          stop=thread.stop)
        started.append((thread, live, sandbox_backend))
        return live

    yield make
    leaks = []
    for thread, live, backend in started:
        thread.stop()
        if backend.name == "docker":
            left = count_containers(live.instance)
            if left:
                leaks.append(f"{left} container(s) of {live.instance}")
                backend.remove_owned(live.instance)
        backend.close()
    assert not leaks, f"test servers left containers behind: {leaks}"


@pytest.fixture
def docker_server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory("docker")


@pytest.fixture
def process_server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory("process")


def with_keys(settings_overrides: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {**settings_overrides, "api_keys": tuple(keys)}


__all__ = ["IN_CI", "LiveServer", "count_containers", "free_port", "replace", "with_keys"]
