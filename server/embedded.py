"""A ToolGym server on a thread of this process: for ``toolgym demo``, the tests and the
benchmarks, which all need a real server on loopback they can start and stop."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["EmbeddedServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free now (another process may take it before we bind)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """uvicorn serving ``app`` on ``host:port`` (port 0: a free one) in a daemon thread.

    ``start`` returns once the app's startup (lifespan) has finished, or raises if it failed;
    ``stop`` runs the app's shutdown, as SIGTERM would. A context manager; ``stop`` is
    idempotent."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=self.port, log_level=log_level, lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="toolgym-embedded-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 120.0) -> EmbeddedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the embedded server failed to start (its log says why)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded server did not start within {timeout_s:g} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 90.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
