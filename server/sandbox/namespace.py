"""The ``namespace`` backend: each episode a fresh namespace set inside a long-lived, hardened host container.

Docker makes ~5 hardened containers a second here; a fresh user+pid+mount+ipc+uts+net namespace
set costs milliseconds. So this tier keeps a few *host containers* (the sandbox image, no
network, read-only root, every capability dropped, no-new-privileges, uid 65534, a pids and a
memory limit, our seccomp profile ``seccomp_namespace.json``, ``/proc`` unmasked so an episode
can mount its own) and makes each episode inside one of them: the supervisor ``nsd.py`` (pid 1
of the host container) forks it into namespaces of its own with its own tmpfs ``/work``,
``/tmp`` and ``/dev/shm``, and runs the same agent as the container tier there, so every
``Sandbox`` method is the container tier's (``AgentSandbox``). docs/isolation.md says what each
tier isolates and what lifting the masked paths exposes.

One attach stream per host container carries every episode's agent stream, framed by episode
(``nsd.py``'s module doc); ``nshost.py`` splits it into one ``Channel`` per episode.

Per-episode limits without cgroups (cgroup v1 is not writable inside a container): the agent's
``RLIMIT_NPROC`` (``--nproc``), which since Linux 5.14 counts per user namespace, so each
episode's count is its own although every episode is uid 65534 to the host; ``RLIMIT_AS`` on the
episode's pid 1 and every run; ``RLIMIT_CPU`` and the run timeout per run; a tmpfs ``size=`` per
mount. The host container's memory, pids and CPU limits bound the sum of its episodes.

A host container takes at most ``episodes_per_host`` live episodes and ``host_max_episodes`` in
its life; then, or on any anomaly (an agent that stopped answering or died, a process left
after a close, a file in the host container's own writable dirs), it is retired: it takes no
new episode and is removed when its last one closes. One spare host container is started
ahead when free room runs low, so a reset rarely waits for ``docker run``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from toolgym.errors import SandboxError
from toolgym.server.sandbox.agent_client import AGENT_SOURCE, AgentSandbox
from toolgym.server.sandbox.base import Sandbox, SandboxSpec
from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED, docker_client
from toolgym.server.sandbox.nshost import EpisodeChannel, Host
from toolgym.server.sandbox.seccomp import PROFILE_PATH

__all__ = ["LABEL_ROLE", "NSD_SOURCE", "NamespaceBackend"]

log = logging.getLogger(__name__)

NSD_SOURCE = (Path(__file__).parent / "nsd.py").read_text(encoding="utf-8")
LABEL_ROLE = "toolgym.role"
HOST_ROLE = "namespace-host"
SANDBOX_USER = "65534:65534"
CLOSE_WAIT_S = 5.0
"""How long a close waits for the supervisor's word that the episode's namespace is gone."""


class NamespaceBackend:
    """Sandboxes as namespace sets inside pooled host containers (see the module doc)."""

    name = "namespace"
    isolated = True

    def __init__(self, *, image: str, instance: str, client: Any = None, start_timeout_s: float = 30.0,
                 episodes_per_host: int = 64, host_max_episodes: int = 1024) -> None:
        self._client = client if client is not None else docker_client()
        self._image = image
        self._instance = instance
        self._start_timeout_s = start_timeout_s
        self._per_host = max(1, episodes_per_host)
        self._max_episodes = max(1, host_max_episodes)
        self._hosts: list[Host] = []
        self._lock = threading.Lock()
        self._started = threading.Condition(self._lock)
        """Notified when a host container start ends (made or failed)."""
        self._starting = 0
        self._spare: threading.Thread | None = None
        self._profile = PROFILE_PATH.read_text(encoding="utf-8")
        self._host_spec: SandboxSpec | None = None
        self.recycled = 0
        """Host containers retired so far (after ``host_max_episodes``, or on an anomaly)."""

    @property
    def hosts(self) -> list[str]:
        """Names of the host containers in use now (for tests and operators)."""
        with self._lock:
            return [h.name for h in self._hosts]

    def check(self) -> None:
        """Raise ``SandboxError`` unless the engine answers and has the sandbox image."""
        try:
            self._client.ping()
            self._client.images.get(self._image)
        except Exception as exc:
            raise SandboxError(f"namespace backend: engine or image {self._image!r} unavailable ({exc});"
                               " build the image with `toolgym build-image`") from exc

    def _start_host(self, spec: SandboxSpec) -> Host:
        """Create and start one host container and wait for its supervisor's hello.

        Created through the low-level API: the SDK's ``containers.create`` has no field for the
        engine's ``MaskedPaths``/``ReadonlyPaths`` (docs/isolation.md says why they are lifted).
        """
        name = f"toolgym-ns-{self._instance[:20]}-{uuid.uuid4().hex[:12]}"
        labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: self._instance, LABEL_ROLE: HOST_ROLE}
        # Limits bound the sum of the host's episodes (each has its own rlimits); Docker refuses a
        # CPU quota above the machine's CPUs.
        cpus = min(float(os.cpu_count() or 1), spec.cpus * self._per_host)
        api = self._client.api
        try:
            host_config = api.create_host_config(
                network_mode="none", mem_limit=spec.memory_bytes * self._per_host,
                memswap_limit=spec.memory_bytes * self._per_host,
                pids_limit=(spec.max_processes + 2) * self._per_host + 16, nano_cpus=int(cpus * 1e9),
                cap_drop=["ALL"], read_only=True, ipc_mode="private", log_config={"type": "none"},
                security_opt=["no-new-privileges", f"seccomp={self._profile}"],
            )
            # ``--security-opt systempaths=unconfined``: the engine's API spells it as empty lists.
            host_config["MaskedPaths"] = []
            host_config["ReadonlyPaths"] = []
            created = api.create_container(
                self._image, command=["python3", "-u", "-I", "-c", NSD_SOURCE, AGENT_SOURCE], name=name,
                labels=labels, stdin_open=True, tty=False, detach=True, user=SANDBOX_USER, working_dir="/",
                environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}, host_config=host_config,
            )
            container = self._client.containers.get(created["Id"])
            sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            container.start()
        except Exception as exc:
            raise SandboxError(f"namespace backend could not start a host container: {exc}") from exc
        host = Host(container.id, name, sock, self.host_gone)
        if not host.hello.wait(self._start_timeout_s):
            self._remove(host)
            raise SandboxError(f"namespace host {name}: no hello within {self._start_timeout_s:g} s"
                               f" ({host.channel.diagnostics()[-300:]})")
        return host

    def _free(self) -> int:
        """Episodes the usable hosts can still take: live room, and room left in their lives."""
        return sum(min(self._per_host - len(h.episodes), self._max_episodes - h.opened)
                   for h in self._hosts if not h.retired and not h.dead)

    def _spare_host(self) -> None:
        """Start one host container ahead, in the background, when free room runs low (at most one at a time)."""
        if self._host_spec is None or self._starting or self._free() > self._per_host // 4:
            return
        self._starting += 1
        spec = self._host_spec

        def start() -> None:
            try:
                host = self._start_host(spec)
                with self._lock:
                    self._hosts.append(host)
            except SandboxError as exc:
                log.warning("namespace backend: spare host: %s", exc.message)
            finally:
                with self._lock:
                    self._starting -= 1
                    self._started.notify_all()

        threading.Thread(target=start, name="toolgym-ns-spare", daemon=True).start()

    def _place(self, spec: SandboxSpec) -> tuple[Host, EpisodeChannel]:
        """A host container with room, and a new episode slot on it.

        When none has room, one caller starts a host and the others wait for it (a burst of resets
        must not start a host container each).
        """
        deadline = time.monotonic() + 2 * self._start_timeout_s
        while True:
            with self._lock:
                self._host_spec = spec
                while True:
                    for host in self._hosts:
                        if not host.retired and not host.dead and len(host.episodes) < self._per_host:
                            host.opened += 1
                            episode = EpisodeChannel(host, host.opened)
                            host.episodes[episode.ep] = episode
                            if host.opened >= self._max_episodes:
                                self._retire(host, f"reached host_max_episodes={self._max_episodes}")
                            self._spare_host()
                            return host, episode
                    if not self._starting:
                        break
                    if not self._started.wait(timeout=max(0.0, deadline - time.monotonic())):
                        raise SandboxError("namespace backend: no host container with room in time")
                self._starting += 1
            try:
                new = self._start_host(spec)
            finally:
                with self._lock:
                    self._starting -= 1
                    self._started.notify_all()
            with self._lock:
                self._hosts.append(new)
                self._started.notify_all()

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Open one episode (a fresh namespace set) on a host container and wait for its agent's hello.

        ``spec.labels`` name no container here (episodes share their host's); the sandbox id names
        the host container and the episode.

        Raises:
            SandboxError: no host container could be started, or the episode's agent did not answer.
        """
        host, episode = self._place(spec)
        opts = {"memory_bytes": spec.memory_bytes, "max_processes": spec.max_processes,
                "workdir_bytes": spec.workdir_bytes}
        try:
            host.send("O", episode.ep, json.dumps(opts).encode())
        except OSError as exc:
            self._drop(host, episode)
            raise SandboxError(f"namespace host {host.name}: cannot open an episode ({exc})") from exc
        return AgentSandbox.start(f"{host.name}/{episode.ep}", episode, lambda: self._close(host, episode),
                                  self._start_timeout_s)

    def _close(self, host: Host, episode: EpisodeChannel) -> bool:
        """End the episode's namespace set, then retire its host on an anomaly and remove it once empty."""
        with self._lock:
            if episode.ep not in host.episodes:
                return False
        if not host.dead:
            try:
                host.send("C", episode.ep)
            except OSError:
                pass
            info = episode.wait_exit(CLOSE_WAIT_S)
            anomaly = episode.anomaly or (None if info is None else info.get("anomaly"))
            if info is None:
                anomaly = anomaly or "no word from the supervisor after a close"
            if anomaly:
                with self._lock:
                    self._retire(host, anomaly)
        self._drop(host, episode)
        return True

    def _drop(self, host: Host, episode: EpisodeChannel) -> None:
        with self._lock:
            host.episodes.pop(episode.ep, None)
            remove = (host.retired is not None or host.dead) and not host.episodes and not host.removed
            if remove:
                host.removed = True
                if host in self._hosts:
                    self._hosts.remove(host)
        if remove:
            self._remove(host)

    def _retire(self, host: Host, why: str) -> None:
        """Take no new episode on ``host`` (call with the lock held); it goes once empty."""
        if host.retired is None:
            host.retired = why
            self.recycled += 1
            log.info("namespace host %s retired: %s", host.name, why)

    def host_gone(self, host: Host, why: str) -> None:
        """The host container's stream ended: its episodes see end of stream; it goes when they are closed."""
        with self._lock:
            self._retire(host, why)
            episodes = list(host.episodes.values())
            empty = not episodes and not host.removed
            if empty:
                host.removed = True
                if host in self._hosts:
                    self._hosts.remove(host)
        for episode in episodes:
            episode.feed(b"")
        if empty:
            self._remove(host)

    def _remove(self, host: Host) -> None:
        host.channel.close()
        try:
            self._client.api.remove_container(host.id, force=True, v=True)
        except Exception as exc:  # the start-up sweep removes it by label
            log.debug("namespace host %s: removal: %s", host.name, exc)

    def remove_owned(self, instance: str | None = None) -> int:
        """Remove the containers of ``instance`` (None: every instance), hosts or not, as ``DockerBackend`` does.

        Found by label on the engine, so a dead server's leftovers of either Docker tier go too.
        """
        filters = [f"{LABEL_MANAGED}=1"]
        if instance is not None:
            filters.append(f"{LABEL_INSTANCE}={instance}")
        found = self._client.api.containers(all=True, quiet=True, filters={"label": filters})
        removed = 0
        for c in found:
            try:
                self._client.api.remove_container(c["Id"], force=True, v=True)
                removed += 1
            except Exception:
                pass
        with self._lock:
            if instance is None or instance == self._instance:
                self._hosts.clear()
        return removed

    def close(self) -> None:
        """Close the engine client; host containers are left to ``remove_owned`` (never raises)."""
        try:
            self._client.close()
        except Exception:
            pass
