"""``toolgym serve`` as a child process, the way a user starts it, for tests that need a real one.

Tests of start-up, shutdown, signals, crashes and restarts cannot use the in-process server of
``tests/server/server_kit.py``: they need the CLI, its own process and its own pid. This is the
one place that starts such a server. The child gets a scrubbed environment (no ``TOOLGYM_*``
variable of the caller's leaks in), its own instance-lock dir under the test's temp dir, a log
file the assertions can quote, and its own session, so a signal sent to it reaches nothing else.
It is ended only by its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from toolgym.server.embedded import free_port

__all__ = ["ServeProcess"]


class ServeProcess:
    """One ``toolgym serve`` child on 127.0.0.1.

    Args:
        tmp: the test's temp dir: the log, the instance locks and (unless ``--db`` is in
            ``args``) the database go there.
        args: more ``toolgym serve`` flags (``--backend process``, ``--warm-pool 0``...).
        port: the port to serve on (a free one by default).
        env: ``TOOLGYM_*`` (or other) variables for the child, on top of the scrubbed environment.
        log_level: the server's ``--log-level``.
    """

    def __init__(
        self,
        tmp: Path,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_")}
        environ["TOOLGYM_INSTANCE_DIR"] = str(tmp / "instances")
        environ.update(env or {})
        cmd = [sys.executable, "-m", "toolgym.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", log_level, *args]
        if "--db" not in args:
            cmd += ["--db", str(tmp / f"serve-{self.port}.db")]
        self.log_path = tmp / f"serve-{self.port}-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self.proc.pid

    def log(self, tail: int | None = None) -> str:
        """What the server printed so far (its last ``tail`` characters when given)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text[-tail:] if tail else text

    def wait_ready(self, timeout_s: float = 120.0) -> ServeProcess:
        """Wait until ``/readyz`` answers 200; fails at once, with the log, if the server exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"the server exited ({self.proc.returncode}): {self.log(6000)}"
            try:
                if httpx.get(self.base_url + "/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the server was not ready in {timeout_s} s: {self.log(6000)}"
            time.sleep(0.2)

    def client(self, key: str | None = None, timeout: float = 120.0) -> httpx.Client:
        """An HTTP client on the server, with ``key`` as its Bearer token when given."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def rss(self) -> int:
        """The server process's resident set, in bytes (Linux's /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server (nothing when it has exited)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout_s: float) -> int:
        """The server's exit code, waiting up to ``timeout_s``."""
        return self.proc.wait(timeout=timeout_s)

    def kill9(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM (a graceful shutdown removes the server's sandboxes), then SIGKILL if it hangs."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

