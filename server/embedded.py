"""A ToolGym server on a thread of this process, which its caller starts and stops.

It is for ``toolgym demo``, the tests and the benchmarks, which all need a real server on
loopback they can start and stop.

Both this and ``toolgym serve`` bind their listening socket (``listen_socket``) before the
app's start-up runs: uvicorn on its own runs the start-up first and binds after, so a second
server on a busy port would have claimed its sandboxes before failing with "address already
in use".
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

__all__ = ["EmbeddedServer", "free_port", "listen_socket"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free now (another process may take it before we bind)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listen_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (port 0: a free one).

    Raises ``OSError`` (``EADDRINUSE`` when a server already listens there) before anything
    else has happened. ``SO_REUSEADDR`` lets a restart bind over the last run's closing
    connections; it never lets two sockets listen on one port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class EmbeddedServer:
    """uvicorn serving ``app`` on ``host:port`` (port 0: a free one) in a daemon thread.

    The port is bound when the object is made (``OSError`` if it is taken), before the app's
    start-up runs. ``start`` returns once the app's startup (lifespan) has finished, or raises
    if it failed; ``stop`` runs the app's shutdown, as SIGTERM would. A context manager;
    ``stop`` is idempotent.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        self.host = host
        self._socket = listen_socket(host, port)
        self.port = int(self._socket.getsockname()[1])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=self.port, log_level=log_level, lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="toolgym-embedded-server", daemon=True)

    @property
    def base_url(self) -> str:
        """Where a client reaches this server, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 120.0) -> EmbeddedServer:
        """Serve, once the app's start-up has finished; ``RuntimeError`` if it failed."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                self._close_socket()
                raise RuntimeError("the embedded server failed to start (its log says why)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded server did not start within {timeout_s:g} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 90.0) -> None:
        """Run the app's shutdown and release the port."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive():
            self._close_socket()

    def _close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
