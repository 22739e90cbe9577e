"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temp dir, a loopback port.

``PgCluster.start`` runs ``initdb`` and ``pg_ctl start`` from ``/usr/lib/postgresql/<newest>/bin``
(Debian's ``postgresql`` package; ``scripts/ensure-postgres.sh`` installs it under CI). initdb
refuses to run as root, so as root the cluster runs as the ``postgres`` user the package makes
(else ``nobody``), through ``runuser``, in a directory of its own under the system temp dir
(pytest's tmp dirs are private to root). Password auth over TCP on 127.0.0.1, so the URLs the
tests use are real ``postgresql://user:pass@host:port/db`` URLs. ``stop`` shuts it down
(``pg_ctl -m immediate``) and removes the directory.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from toolgym.server.embedded import free_port

USER = "toolgym"
PASSWORD = "pg-test-secret"


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin dir, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def postgres_problem() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if pg_bin() is None:
        return "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (bash scripts/ensure-postgres.sh)"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    return None


def _run_as() -> list[str]:
    if os.getuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return ["runuser", "-u", name, "--"]
        except KeyError:
            continue
    raise RuntimeError("as root, initdb needs a non-root user (postgres or nobody) to run as")


class PgCluster:
    """One running throwaway cluster; ``new_database`` gives each test a database of its own."""

    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="toolgym-pg-"))
        self.port = free_port()
        self.prefix = _run_as()
        self.started = False

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            log = self.dir / "server.log"
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}"
                               f"{log.read_text() if log.exists() else ''}")

    def start(self) -> PgCluster:
        """initdb and start; returns self once it accepts connections."""
        os.chmod(self.dir, 0o755)
        (self.dir / "sock").mkdir()
        pwfile = self.dir / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.prefix:
            user = self.prefix[2]
            for path in (self.dir, self.dir / "sock", pwfile):
                shutil.chown(path, user=user)
        data = self.dir / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8", "--no-locale",
                  "--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={pwfile}")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir / 'sock'}"
                   " -c max_connections=200 -c shared_buffers=32MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.dir / "server.log"),
                  "-w", "-t", "60", "start")
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this cluster, with the test user's password."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediately: nothing here is worth a checkpoint) and remove its files."""
        try:
            if self.started:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w",
                          "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def terminate_lease(url: str, replica: str) -> None:
    """End a replica's lease session from outside, as a network cut or an administrator would."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                              (f"toolgym-lease-{replica}",)).fetchall()
    assert ended == [(True,)], ended
