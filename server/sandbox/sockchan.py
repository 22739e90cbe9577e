"""The container tier's direct channel: one unix socket per container, bind-mounted read-only.

Docker's attach relay puts dockerd (Go) and the containerd shim between the server and the
agent's stdin/stdout: every request and reply is copied twice more, on host CPU, and each
container start also sets the attach up. With this channel the server listens on a unix socket
of its own, in a 0700 directory only it can enter, bind-mounts that ONE socket file read-only
into the container, and the agent connects to it at start (``agent.py --connect PATH``) and
speaks the same protocol over it. A read-only bind still permits ``connect()``; the sandbox gets
no writable host path.

The server accepts exactly one connection, then closes and unlinks the listener: nothing can
connect again (the container's code included: the mount stays, read-only, on the unlinked
socket, and its connect is refused). The container's mount table shows the host path of that
socket (channel directory and instance id); nothing else of the host is visible.

The socket's path must be the same for the server and the engine, which reads it from the
host's filesystem. A server that runs on the engine's host has that for free; a server in a
container talking to the host's engine needs the channel directory on a volume mounted at the
same path on both sides, or the attach channel (setting ``sandbox_channel``, docs/operations.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import shutil
import socket
import struct
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from toolgym.server.sandbox.agent_client import Channel

__all__ = ["CHANNELS", "CONTAINER_SOCKET", "ChannelListener", "SocketChannel", "default_channel_dir",
           "drain_diagnostics", "engine_on_this_host", "remove_channel_dirs", "socket_hint"]

CHANNELS = ("attach", "socket")
"""The container tier's channels; ``auto`` (the default) picks one with ``engine_on_this_host``."""
CONTAINER_SOCKET = "/run/toolgym-agent.sock"
"""Where the socket file is mounted inside every container (the agent's ``--connect``)."""
ACCEPT_SLICE_S = 0.25
"""How often the wait for the agent's connect asks the engine whether the container still runs,
when there is no stderr stream to watch instead."""
ALIVE_CHECK_S = 2.0
"""With a stderr stream to watch (its end is the container's exit), the engine is asked this
seldom: a burst of creations on a loaded host otherwise sends dockerd an inspect per waiting
container four times a second."""


def default_channel_dir() -> Path:
    """``/run/toolgym/channels`` for root, else ``toolgym-<uid>/channels`` in the system temp dir.

    /run is a tmpfs: sockets left by a crash never outlive a reboot.
    """
    if os.getuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/toolgym/channels")
    return Path(tempfile.gettempdir()) / f"toolgym-{os.getuid()}" / "channels"


def engine_on_this_host() -> bool:
    """Whether the Docker engine sees this process's filesystem, as the ``socket`` channel needs.

    True when the engine answers on a local unix socket (``DOCKER_HOST`` unset or ``unix://``)
    whose peer process is visible here (``SO_PEERCRED``: a peer in another, outer pid namespace
    reads as pid 0, as with a server in a container given the host's engine socket) and has the
    same root directory as this process. A root that cannot be inspected (no permission) counts
    as the same: the pid namespace is shared.
    """
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return False
    path = host[len("unix://"):] if host else "/var/run/docker.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            probe.connect(path)
            pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return False
    if pid <= 0:
        return False
    try:
        theirs, ours = os.stat(f"/proc/{pid}/root"), os.stat("/")
    except OSError:
        return True
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def socket_hint(listener: ChannelListener | None) -> str:
    """What to check when the ``socket`` channel fails (appended to the error): the setting and the path."""
    if listener is None:
        return ""
    return (f"; sandbox_channel=socket needs the engine to see {listener.path.parent} at the same path"
            " (a server in a container: mount that directory from the host at the same path), or set"
            " --sandbox-channel attach (TOOLGYM_SANDBOX_CHANNEL=attach)")


def _instance_dir(base: Path, instance: str) -> Path:
    """``base/<first 8 safe chars of the id>-<8 hex of its hash>``: short, as socket paths must be."""
    digest = hashlib.sha256(instance.encode("utf-8")).hexdigest()[:8]
    return base / f"{re.sub(r'[^A-Za-z0-9._-]', '_', instance)[:8]}-{digest}"


def _private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) with mode 0700, and refuse one another user owns."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to this server's uid {os.getuid()}")
    if st.st_mode & 0o077:
        path.chmod(0o700)


def remove_channel_dirs(base: Path, instance: str | None) -> None:
    """Remove the channel directory of ``instance`` (None: of every instance) under ``base``.

    Sockets are unlinked as soon as their agent connects or fails to, so what this finds was left
    by a server that died while creating a sandbox. Never raises.
    """
    targets = [_instance_dir(base, instance)] if instance is not None else (
        list(base.iterdir()) if base.is_dir() else [])
    for target in targets:
        shutil.rmtree(target, ignore_errors=True)


class SocketChannel(Channel):
    """The server's end of one accepted agent connection: plain bytes, no framing.

    ``stderr`` is another channel whose ``diagnostics`` hold the agent's stderr (the backend's
    stderr-only attach), drained only when an error message asks for it.
    """

    def __init__(self, sock: socket.socket, stderr: Channel | None = None) -> None:
        self._sock = sock
        self._stderr = stderr
        self._closed = False

    def send(self, data: bytes) -> None:
        """Write all of ``data``; a peer gone for 60 s raises ``OSError``."""
        self._sock.settimeout(60.0)
        self._sock.sendall(data)

    def read_chunk(self, timeout_s: float) -> bytes:
        """Up to 1 MiB of the agent's replies; ``b""`` once it is gone (a killed container closes it)."""
        self._sock.settimeout(max(timeout_s, 1e-6))
        return self._sock.recv(1 << 20)

    def close(self) -> None:
        """Close the connection (idempotent): the agent reads end of input and exits."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._stderr is not None:
            self._stderr.close()

    def diagnostics(self) -> str:
        """What the agent wrote to stderr so far (waits at most ~50 ms for more)."""
        return drain_diagnostics(self._stderr)


def drain_diagnostics(stderr: Channel | None) -> str:
    """Read what has arrived on a stderr-only channel, then return its ``diagnostics``."""
    if stderr is None:
        return ""
    with contextlib.suppress(TimeoutError, OSError):
        while stderr.read_chunk(0.05):  # stderr frames are kept aside; stdout never comes
            pass
    return stderr.diagnostics()


class ChannelListener:
    """One listening socket for one container, from before its creation to its agent's connect.

    ``accept`` takes exactly one connection and then closes and unlinks the listener, as does
    ``close`` on every failure path: no socket file outlives the container's start.
    """

    def __init__(self, base: Path, instance: str) -> None:
        directory = _instance_dir(base, instance)
        _private_dir(base)
        _private_dir(directory)
        # Short names: a unix socket path is limited to 107 bytes.
        self.path = directory / f"{uuid.uuid4().hex[:12]}.sock"
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(str(self.path))
            # The agent runs as another uid; connect() needs write permission on the socket.
            # The 0700 directory keeps every other host user away from it.
            os.chmod(self.path, 0o666)
            self._sock.listen(1)
        except BaseException:
            self.close()
            raise

    def accept(self, deadline: float, alive: Callable[[], bool], stderr: Channel | None = None) -> SocketChannel:
        """Wait until ``deadline`` (monotonic) for the agent's one connection, then stop listening.

        A container that exits before its agent connects fails at once rather than at the
        deadline: the end of its ``stderr`` stream says so (the engine's ``alive`` is then asked
        only every ``ALIVE_CHECK_S``, in case that stream stays open), and without a stream
        ``alive`` is asked every ``ACCEPT_SLICE_S``.

        Raises:
            TimeoutError: nothing connected in time.
            EOFError: ``alive`` said the container is gone.
        """
        assert self._sock is not None, "accept after close"
        listener = self._sock
        watched = stderr.fileno() if stderr is not None else None
        slice_s = ALIVE_CHECK_S if watched is not None else ACCEPT_SLICE_S
        next_check = time.monotonic() + slice_s
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError
                fds = [listener.fileno()] + ([watched] if watched is not None else [])
                ready, _, _ = select.select(fds, [], [], max(0.0, min(deadline, next_check) - now))
                if listener.fileno() in ready:
                    conn, _ = listener.accept()
                    conn.settimeout(None)
                    return SocketChannel(conn, stderr)
                if watched is not None and watched in ready and stderr is not None:
                    try:
                        if stderr.read_chunk(0.001) == b"":  # stderr frames are kept aside
                            raise EOFError("the container exited before its agent connected")
                    except TimeoutError:
                        pass
                    continue
                if time.monotonic() >= next_check:
                    if not alive():
                        raise EOFError("the container exited before its agent connected")
                    next_check = time.monotonic() + slice_s
        finally:
            self.close()

    def close(self) -> None:
        """Close and unlink the listener (idempotent, never raises)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
