"""Fixtures of the server suite, built from the pieces of tests/conftest.py.

``farm`` (one per module) and ``farm_fn`` (one per test) start real servers on loopback with
``farm.start(backend="docker"|"process", **settings)``; unlike ``server_factory`` they hand
back servers that a test can stop and restart. Teardown stops them and fails if a container
of theirs is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from pg_kit import PgCluster, postgres_problem
from server_kit import ServerFarm

ROOT_CONFTEST = (Path(__file__).parent.parent / "conftest.py").resolve()


def _root(config: pytest.Config) -> ModuleType:
    """The already loaded tests/conftest.py (its SESSION label and Docker probe)."""
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if isinstance(plugin, ModuleType) and path and Path(path).resolve() == ROOT_CONFTEST:
            return plugin
    raise RuntimeError("tests/conftest.py is not loaded")


@pytest.fixture(scope="session")
def root_conftest(request: pytest.FixtureRequest) -> ModuleType:
    return _root(request.config)


def _farm(root: ModuleType, tmpdir: Path) -> ServerFarm:
    def need_docker() -> None:
        problem = root.docker_problem()
        if problem is not None:
            if root.IN_CI:
                pytest.fail(f"CI=true but Docker tests cannot run: {problem}")
            pytest.skip(problem)

    return ServerFarm(tmpdir, root.SESSION, root.IMAGE, need_docker)


@pytest.fixture(scope="module")
def farm(root_conftest: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFarm]:
    servers = _farm(root_conftest, tmp_path_factory.mktemp("servers"))
    yield servers
    leaks = servers.stop_all()
    assert not leaks, f"test servers left containers behind: {leaks}"


@pytest.fixture
def farm_fn(root_conftest: ModuleType, tmp_path: Path) -> Iterator[ServerFarm]:
    servers = _farm(root_conftest, tmp_path)
    yield servers
    leaks = servers.stop_all()
    assert not leaks, f"test servers left containers behind: {leaks}"


@pytest.fixture(scope="session")
def session_label(root_conftest: ModuleType) -> str:
    """The instance label of the session's ``docker_backend``."""
    return str(root_conftest.SESSION)


@pytest.fixture(scope="session")
def sandbox_image(root_conftest: ModuleType) -> str:
    return str(root_conftest.IMAGE)


@pytest.fixture(scope="session")
def pg_cluster(root_conftest: ModuleType) -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the session (tests/server/pg_kit.py).

    Skipped where PostgreSQL or psycopg is missing, except under CI=true, where that is a
    failure (scripts/ensure-postgres.sh installs the server, the ``test`` extra psycopg).
    """
    problem = postgres_problem()
    if problem is not None:
        if root_conftest.IN_CI:
            pytest.fail(f"CI=true but PostgreSQL tests cannot run: {problem}")
        pytest.skip(problem)
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind: a SQLite file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "toolgym.db")
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()


@pytest.fixture
def pg_db(pg_cluster: PgCluster) -> str:
    """A fresh, empty PostgreSQL database's URL."""
    return pg_cluster.new_database()
