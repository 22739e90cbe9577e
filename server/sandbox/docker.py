"""The ``docker`` backend: one hardened container per sandbox, never reused.

Every container gets: no network, a memory limit with no swap, a pids limit, a CPU quota, a
read-only root with tmpfs work dirs, all capabilities dropped, no-new-privileges, a non-root
user, no logging driver (tool output is not written to the host's disk), and labels naming
the server instance, episode and owner. Nothing from the host is mounted: the agent's source
travels as the container's command (``python3 -c``).

The server talks to the agent over the container's attached stdin/stdout (docker SDK
``attach_socket``): one persistent stream, demultiplexed from Docker's 8-byte frame headers,
so a call never pays for ``docker exec``.

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
from typing import Any

from toolgym.errors import SandboxError
from toolgym.server.sandbox.agent_client import AGENT_SOURCE, AgentSandbox, Channel
from toolgym.server.sandbox.base import Sandbox, SandboxSpec

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
        self._sock.settimeout(60.0)
        self._sock.sendall(data)

    def read_chunk(self, timeout_s: float) -> bytes:
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
        if self._closed:
            return
        self._closed = True
        for obj in (self._wrapper, self._sock):
            try:
                obj.close()
            except OSError:
                pass

    def diagnostics(self) -> str:
        return b"".join(self._stderr)[-4000:].decode("utf-8", "replace")


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
    ) -> None:
        self._client = client if client is not None else docker_client()
        self._image = image
        self._instance = instance
        self._start_timeout_s = start_timeout_s
        self._runtime = runtime
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

        labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: self._instance, **spec.labels}
        name = f"toolgym-{self._instance[:20]}-{uuid.uuid4().hex[:12]}"
        # Docker copies the image's directory (mode, owner) onto a tmpfs, which overrides
        # mode=1777 (the image's /work is root's 0755): own it by the sandbox user instead.
        uid, _, gid = SANDBOX_USER.partition(":")
        workdir_opts = f"rw,nosuid,nodev,size={spec.workdir_bytes},mode=1777,uid={uid},gid={gid}"
        try:
            container = self._client.containers.create(
                self._image,
                command=["python3", "-u", "-I", "-c", AGENT_SOURCE, "--workdir", WORKDIR, "--kill-all"],
                name=name,
                labels=labels,
                stdin_open=True,
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
                ipc_mode="private",
                log_config={"type": "none"},
                runtime=self._runtime,
            )
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"no sandbox image {self._image!r}; build it with `toolgym build-image`"
            ) from None
        except Exception as exc:
            raise SandboxError(f"docker could not create a sandbox: {exc}") from exc
        if self._unremoved:  # the engine answers again: clear what it could not remove before
            self._remove_unreached()

        def destroy() -> bool:
            return self._remove(container.id)

        def set_process_limit(max_processes: int | None) -> None:
            # The agent is the container's only other process: one more, so the run's own
            # tree holds exactly max_processes (RLIMIT_NPROC cannot: the uid is host-wide).
            self._set_pids_limit(container.id, _pids_limit(spec.max_processes, max_processes))

        try:
            sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            container.start()
        except Exception as exc:
            destroy()
            raise SandboxError(f"docker could not start sandbox {name}: {exc}") from exc
        return AgentSandbox.start(
            name, _AttachChannel(sock), destroy, self._start_timeout_s, set_process_limit=set_process_limit
        )

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
        return sum(1 for c in containers if self._remove(c["Id"]))

    def close(self) -> None:
        """Close the engine client; containers are left to ``remove_owned`` (never raises)."""
        try:
            self._client.close()
        except Exception:
            pass
