"""The ``docker`` backend: one hardened container per sandbox, never reused.

Every container gets: no network, a memory limit with no swap, a pids limit, a CPU quota, a
read-only root with tmpfs work dirs, all capabilities dropped, no-new-privileges, a non-root
user, no logging driver (tool output is not written to the host's disk), and labels naming
the server instance, episode and owner. The agent's source travels as the container's command
(``python3 -c``); the only host path mounted is the read-only socket file of the ``socket``
channel.

The server talks to the agent over one persistent stream, so a call never pays for ``docker
exec``. Two channels carry it (``DockerBackend(channel=...)``, setting ``sandbox_channel``):

- ``socket``: a unix socket of the server's, bind-mounted read-only into the container, which
  the agent connects to at start (``toolgym.server.sandbox.sockchan``). No relay: the bytes go
  from the server to the agent directly. Needs the engine to see the server's filesystem. The
  agent's stderr alone is still attached, for error messages: nothing flows on it otherwise.
- ``attach``: the container's attached stdin/stdout/stderr (docker SDK ``attach_socket``),
  demultiplexed from Docker's 8-byte frame headers; relayed by dockerd and the containerd shim.
  Works wherever the engine is.

A run's ``max_processes`` becomes the container's pids limit (plus one, for the agent) before
the first run that asks for it: ``RLIMIT_NPROC`` would count the sandbox user's processes in
every container on the host, since they all share uid 65534.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from toolgym.errors import SandboxError
from toolgym.server.sandbox.agent_client import AGENT_SOURCE, AgentSandbox, Channel
from toolgym.server.sandbox.base import Sandbox, SandboxSpec
from toolgym.server.sandbox.sockchan import (
    CHANNELS,
    CONTAINER_SOCKET,
    ChannelListener,
    default_channel_dir,
    drain_diagnostics,
    engine_on_this_host,
    remove_channel_dirs,
    socket_hint,
)

__all__ = ["LABEL_INSTANCE", "LABEL_MANAGED", "DockerBackend", "docker_client"]

log = logging.getLogger(__name__)

LABEL_MANAGED = "toolgym.managed"
LABEL_INSTANCE = "toolgym.instance"
SANDBOX_USER = "65534:65534"
WORKDIR = "/work"


def docker_client(timeout_s: float = 60.0) -> Any:
    """A docker SDK client from the environment (``DOCKER_HOST`` or the local socket)."""
    import docker

    return docker.from_env(timeout=int(timeout_s))


class _AttachChannel(Channel):
    """Docker's attach stream: stdin raw, stdout/stderr multiplexed in frames.

    Each frame is ``[stream, 0, 0, 0, size (uint32 big-endian)] + payload``.
    """

    def __init__(self, sock: Any) -> None:
        self._wrapper = sock
        self._sock: socket.socket = getattr(sock, "_sock", sock)
        self._raw = bytearray()
        self._stderr: deque[bytes] = deque(maxlen=64)
        self._closed = False

    def send(self, data: bytes) -> None:
        """Write all of ``data`` to the agent's stdin; a peer gone for 60 s raises ``OSError``."""
        self._sock.settimeout(60.0)
        self._sock.sendall(data)

    def read_chunk(self, timeout_s: float) -> bytes:
        """The payload of the next stdout frames (stderr frames are kept for ``diagnostics``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            out = bytearray()
            while len(self._raw) >= 8:
                stream, size = self._raw[0], struct.unpack(">I", self._raw[4:8])[0]
                if len(self._raw) < 8 + size:
                    break
                payload = bytes(self._raw[8 : 8 + size])
                del self._raw[: 8 + size]
                if stream == 2:
                    self._stderr.append(payload)
                else:
                    out += payload
            if out:
                return bytes(out)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                raise TimeoutError from None
            if not chunk:
                return b""
            self._raw += chunk

    def close(self) -> None:
        """Close the attach connection (idempotent): the agent reads end of input and exits."""
        if self._closed:
            return
        self._closed = True
        for obj in (self._wrapper, self._sock):
            try:
                obj.close()
            except OSError:
                pass

    def diagnostics(self) -> str:
        """The last 4,000 characters the agent wrote to stderr."""
        return b"".join(self._stderr)[-4000:].decode("utf-8", "replace")

    def fileno(self) -> int | None:
        """The attach socket's descriptor (``Channel.fileno``); None once closed."""
        return None if self._closed else self._sock.fileno()


def _pids_limit(sandbox_limit: int, max_processes: int | None) -> int:
    """The container's pids limit for a run: the sandbox's own, or the run's, whichever is lower.

    The run's is its ``max_processes`` plus one for the agent (a run that sets none gets the
    sandbox's); the sandbox's limit stays a ceiling a run cannot raise.
    """
    return sandbox_limit if max_processes is None else min(sandbox_limit, max_processes + 1)


class DockerBackend:
    """Sandboxes as hardened Docker containers (see the module doc)."""

    name = "docker"
    isolated = True

    def __init__(
        self,
        *,
        image: str,
        instance: str,
        client: Any = None,
        start_timeout_s: float = 30.0,
        runtime: str | None = None,
        channel: str = "auto",
        channel_dir: str | Path | None = None,
    ) -> None:
        """Connect to the engine (``client``, else ``docker_client()``); no container is made yet.

        Args:
            image: the sandbox image (never pulled: ``check`` reports a missing one).
            instance: this server's instance id, the label its containers carry.
            client: a docker SDK client to use instead of one from the environment.
            start_timeout_s: the bound on a new container's agent connecting and saying hello.
            runtime: an OCI runtime other than the engine's default (e.g. ``runsc``).
            channel: ``socket``, ``attach`` (module doc) or ``auto``: ``socket`` when the engine
                runs on this host and sees its filesystem (``sockchan.engine_on_this_host``).
            channel_dir: where the ``socket`` channel's listening sockets live, one 0700
                directory per instance (default ``sockchan.default_channel_dir()``); the engine
                must see it at the same path.
        """
        if channel == "auto":
            channel = "socket" if engine_on_this_host() else "attach"
        if channel not in CHANNELS:
            raise ValueError(f"sandbox channel must be auto, attach or socket, not {channel!r}")
        self._client = client if client is not None else docker_client()
        self._image = image
        self._instance = instance
        self._start_timeout_s = start_timeout_s
        self._runtime = runtime
        self.channel = channel
        """The channel every sandbox of this backend uses: ``attach`` or ``socket``."""
        self._channel_dir = Path(channel_dir) if channel_dir else default_channel_dir()
        self._lock = threading.Lock()
        self._unremoved: set[str] = set()
        """Containers whose removal failed because the engine was unreachable (``_remove``)."""

    @property
    def image(self) -> str:
        """The sandbox image's reference (name:tag) every container is created from."""
        return self._image

    def check(self) -> None:
        """Raise ``SandboxError`` unless the engine answers and has the sandbox image.

        The image is never pulled: a missing one is reported with the command that builds it.
        """
        import docker.errors

        try:
            self._client.ping()
        except Exception as exc:
            raise SandboxError(f"docker backend: the engine does not answer ({exc})") from exc
        if self._unremoved:  # back after a restart: remove what it could not remove while down
            self._remove_unreached()
        try:
            self._client.images.get(self._image)
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"docker backend: no image {self._image!r}; build it with `toolgym build-image`"
            ) from None
        except Exception as exc:
            raise SandboxError(f"docker backend: cannot inspect image {self._image!r} ({exc})") from exc

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Create and start one hardened container for ``spec``, then wait for its agent's hello.

        The container carries this server's instance label beside ``spec.labels``, so
        ``remove_owned`` and a later server's orphan sweep can find it.

        Raises:
            SandboxError: no image, the engine refused, or the agent did not answer in time
                (the container is removed again).
        """
        import docker.errors
        import docker.types

        labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: self._instance, **spec.labels}
        name = f"toolgym-{self._instance[:20]}-{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + self._start_timeout_s
        # Docker copies the image's directory (mode, owner) onto a tmpfs, which overrides
        # mode=1777 (the image's /work is root's 0755): own it by the sandbox user instead.
        uid, _, gid = SANDBOX_USER.partition(":")
        workdir_opts = f"rw,nosuid,nodev,size={spec.workdir_bytes},mode=1777,uid={uid},gid={gid}"
        command = ["python3", "-u", "-I", "-c", AGENT_SOURCE, "--workdir", WORKDIR, "--kill-all"]
        listener: ChannelListener | None = None
        mounts: list[Any] = []
        if self.channel == "socket":
            try:
                listener = ChannelListener(self._channel_dir, self._instance)
            except OSError as exc:
                raise SandboxError(f"cannot make the sandbox channel's socket in {self._channel_dir}: {exc}"
                                   " (sandbox_channel=socket)") from exc
            command += ["--connect", CONTAINER_SOCKET]
            mounts.append(docker.types.Mount(CONTAINER_SOCKET, str(listener.path), type="bind", read_only=True))
        try:
            container = self._client.containers.create(
                self._image,
                command=command,
                name=name,
                labels=labels,
                stdin_open=listener is None,
                tty=False,
                detach=True,
                user=SANDBOX_USER,
                working_dir=WORKDIR,
                environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": WORKDIR},
                network_mode="none",
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,
                pids_limit=spec.max_processes,
                nano_cpus=int(spec.cpus * 1e9),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={WORKDIR: workdir_opts, "/tmp": workdir_opts},
                mounts=mounts,
                ipc_mode="private",
                log_config={"type": "none"},
                runtime=self._runtime,
            )
        except docker.errors.ImageNotFound:
            if listener is not None:
                listener.close()
            raise SandboxError(
                f"no sandbox image {self._image!r}; build it with `toolgym build-image`"
            ) from None
        except Exception as exc:
            if listener is not None:
                listener.close()
            hint = socket_hint(listener)
            raise SandboxError(f"docker could not create a sandbox: {exc}{hint}") from exc
        if self._unremoved:  # the engine answers again: clear what it could not remove before
            self._remove_unreached()

        def destroy() -> bool:
            return self._remove(container.id)

        def set_process_limit(max_processes: int | None) -> None:
            # The agent is the container's only other process: one more, so the run's own
            # tree holds exactly max_processes (RLIMIT_NPROC cannot: the uid is host-wide).
            self._set_pids_limit(container.id, _pids_limit(spec.max_processes, max_processes))

        channel: Channel
        stderr: _AttachChannel | None = None
        try:
            # The socket channel still attaches stderr alone: nothing flows on it unless the
            # agent fails, and then its traceback is in the error message.
            params = {"stdin": 1, "stdout": 1} if listener is None else {}
            sock = container.attach_socket(params={**params, "stderr": 1, "stream": 1})
            if listener is not None:
                stderr = _AttachChannel(sock)
            container.start()
        except Exception as exc:
            if listener is not None:
                listener.close()
            if stderr is not None:
                stderr.close()
            destroy()
            raise SandboxError(f"docker could not start sandbox {name}: {exc}{socket_hint(listener)}") from exc
        if listener is None:
            channel = _AttachChannel(sock)
        else:
            try:
                channel = listener.accept(deadline, lambda: self._running(container.id), stderr)
            except (TimeoutError, EOFError, OSError) as exc:
                diag = drain_diagnostics(stderr).strip()
                if stderr is not None:
                    stderr.close()
                destroy()
                what = ("did not connect within sandbox_start_timeout_s="
                        f"{self._start_timeout_s:g}") if isinstance(exc, TimeoutError) else f"did not connect ({exc})"
                said = f" (agent stderr: {diag[-500:]})" if diag else ""
                raise SandboxError(f"sandbox {name}: the agent {what}{said}{socket_hint(listener)}") from None
        return AgentSandbox.start(
            name, channel, destroy, max(deadline - time.monotonic(), 1.0), set_process_limit=set_process_limit
        )

    def _running(self, container_id: str) -> bool:
        """Whether the container still runs; an engine that does not answer counts as yes (keep waiting)."""
        import docker.errors

        try:
            return bool(self._client.api.inspect_container(container_id)["State"]["Running"])
        except docker.errors.NotFound:
            return False
        except Exception:
            return True

    def _set_pids_limit(self, container_id: str, pids: int) -> None:
        """``docker update --pids-limit`` (the SDK's ``update_container`` lacks the field)."""
        api = self._client.api
        response = api._post_json(api._url("/containers/{0}/update", container_id), data={"PidsLimit": pids})
        api._raise_for_status(response)

    def _remove(self, container_id: str) -> bool:
        """Remove one container; never raises (a removal is clean-up, and callers are on error paths).

        When the engine cannot be reached (restarting, socket gone), the id is kept and removed by
        the next ``create`` or ``check`` (``/readyz``) that reaches the engine: a dockerd restart
        stops our containers but keeps them, and nothing else would come back for them while
        this server runs.
        """
        import docker.errors

        try:
            self._client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                log.warning("could not remove sandbox container %s: %s", container_id[:12], exc)
            return False
        except Exception as exc:  # the engine does not answer: remember it for later
            with self._lock:
                self._unremoved.add(container_id)
            log.warning("could not reach the engine to remove sandbox container %s (%s); will retry",
                        container_id[:12], exc)
            return False
        with self._lock:
            self._unremoved.discard(container_id)
        return True

    def _remove_unreached(self) -> None:
        """Remove the containers whose removal failed while the engine was unreachable (``_remove``)."""
        with self._lock:
            pending = list(self._unremoved)
        for container_id in pending:
            self._remove(container_id)

    def remove_owned(self, instance: str | None = None) -> int:
        """Remove the ToolGym containers of ``instance``; with None, those of EVERY instance.

        Containers are found by label on the engine, so this reaches ones made by other and
        earlier processes: pass your own instance, or one known to be dead (see
        ``toolgym.server.instance``); None would also remove live servers' containers.
        """
        filters = [f"{LABEL_MANAGED}=1"]
        if instance is not None:
            filters.append(f"{LABEL_INSTANCE}={instance}")
        containers = self._client.api.containers(all=True, quiet=True, filters={"label": filters})
        removed = sum(1 for c in containers if self._remove(c["Id"]))
        remove_channel_dirs(self._channel_dir, instance)
        return removed

    def close(self) -> None:
        """Close the engine client and remove this instance's channel directory (never raises).

        Containers are left to ``remove_owned``.
        """
        remove_channel_dirs(self._channel_dir, self._instance)
        try:
            self._client.close()
        except Exception:
            pass
