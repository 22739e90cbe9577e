"""Server settings: one class, read from ``TOOLGYM_*`` variables by ``Settings.from_env``.

Nothing reads the environment at import time: ``create_app(settings)`` takes an explicit
object, so tests build their own. ``validate`` refuses insecure combinations unless they are
asked for by name (``insecure_no_auth``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from toolgym.server.auth import read_keys_file
from toolgym.server.sandbox.base import SandboxSpec

__all__ = ["BackendName", "ChannelName", "IsolationName", "Settings"]

BackendName = Literal["auto", "docker", "process"]
IsolationName = Literal["", "container", "namespace", "process"]
ChannelName = Literal["auto", "attach", "socket"]

_PROCESS_TOKEN = secrets.token_hex(3)
"""Makes default instance ids unique even where pids repeat (servers in separate containers)."""


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """Every knob of a ToolGym server. Timeouts are seconds, named by their scope."""

    host: str = "127.0.0.1"
    port: int = 8000
    backend: BackendName = "auto"
    """``docker`` whenever an engine is reachable (``auto``), else ``process``."""
    isolation: IsolationName = ""
    """The isolation tier (docs/isolation.md): ``container`` (one Docker container per episode),
    ``namespace`` (namespace sets inside pooled host containers) or ``process`` (none). Unset, it
    follows ``backend``; set, it must agree with a ``backend`` other than ``auto``
    (``docker`` is the container or namespace tier, ``process`` the process tier)."""
    ns_episodes_per_host: int = 64
    """Namespace tier: live episodes per host container at most."""
    ns_host_max_episodes: int = 1024
    """Namespace tier: a host container is recycled after this many episodes (and on any anomaly)."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """API keys (``TOOLGYM_API_KEYS``, comma-separated); never shown in a repr or log."""
    api_keys_file: str | None = None
    """A file with one API key per line (``#`` comments allowed). The server reads it again when
    it changes (checked at most once a second) and on SIGHUP, so keys rotate without a restart."""
    insecure_no_auth: bool = False
    """Serve without keys on a non-loopback address. Off unless asked for by name."""
    instance_id: str = ""
    """Names this server's containers (label ``toolgym.instance``). Default: unique to this
    process (hostname, port, pid and a random token), so a second server never takes a live
    one's name. A fixed id makes a restarted server remove its predecessor's leftovers; a live
    server holds its id's lock (``instance_dir``), so a second server with the same id on this
    host refuses to start."""
    instance_dir: str = ""
    """Where live servers hold their instance lock files (default: ``toolgym-<uid>/instances``
    in the system temp dir). Startup removes the containers of instances whose lock is free
    (their server is gone); servers on one host sharing a Docker engine should share it."""
    sandbox_image: str = "toolgym-sandbox:latest"
    sandbox_channel: ChannelName = "auto"
    """The container tier's channel to each agent (``--sandbox-channel``, docs/operations.md): ``socket``
    (a unix socket of the server's, bind-mounted read-only; no dockerd relay, ~0.2 ms and ~0.3 ms of
    engine CPU less per call; the engine must see ``sandbox_channel_dir`` at the same path),
    ``attach`` (Docker's attach stream, wherever the engine is) or ``auto``: ``socket`` when the
    engine is on this host's unix socket and the server is not in a container, else ``attach``."""
    sandbox_channel_dir: str = ""
    """Where the ``socket`` channel's listening sockets live, one 0700 directory per instance
    (default ``/run/toolgym/channels`` for root, else ``toolgym-<uid>/channels`` in the temp dir).
    A server in a container sets it to a host directory mounted at the same path."""
    db_path: str = field(default="toolgym.db", repr=False)
    """Where tasks and trajectories are stored (``--db``): a SQLite file (the default, embedded; shared
    only by servers of one machine; ``:memory:`` keeps nothing across restarts), or a PostgreSQL URL
    (``postgresql://user:pass@host:port/db``, extra ``postgres``) that several replicas share:
    each reads the others' trajectories and none takes another live one's episodes
    (``toolgym.server.store``). Not shown in a repr: a URL may hold a password."""
    task_files: tuple[str, ...] = ()
    """JSONL files registered at startup, each ``ENV_ID=PATH``."""
    load_builtin_tasks: bool = True

    max_live_episodes: int = 256
    """Above this many open episodes, reset answers 503 with Retry-After."""
    max_live_episodes_per_key: int = 0
    """Per-API-key limit on open episodes (429 ``quota_exceeded`` beyond it); 0 means no per-key limit."""
    rate_limit_per_key: float = 0.0
    """Requests per second per API key (HTTP requests and WebSocket frames alike), a token bucket
    holding one second's worth (at least 1) as its burst; beyond it 429 ``rate_limited`` with
    Retry-After. 0 means unlimited."""
    warm_pool_size: int = 2
    """Sandboxes kept started ahead of resets, so a reset does not wait for ``docker run``."""
    warm_pool_max: int = 0
    """Up to this many when demand asks (reset rate x creation time); 0: the pool stays at
    ``warm_pool_size``."""
    idle_timeout_s: float = 900.0
    """An episode with no request for this long is closed (reason ``idle_timeout``)."""
    reaper_interval_s: float = 15.0
    finished_retention_s: float = 3600.0
    """How long a finished episode stays in memory for GET and retried steps."""
    sandbox_start_timeout_s: float = 30.0
    shutdown_grace_s: float = 30.0
    """On SIGTERM, how long in-flight steps may take to finish."""

    max_request_bytes: int = 8 * 1024 * 1024
    """Larger request bodies are refused with 413 (task uploads included)."""
    max_action_chars: int = 65536
    """A longer action is refused with 413."""
    max_output_chars: int = 8192
    """Tool output shown to the policy is cut to this; verification reads it whole."""

    sandbox_memory_bytes: int = 768 * 1024 * 1024
    sandbox_max_processes: int = 64
    sandbox_cpus: float = 1.0
    worker_threads: int = 64
    """Threads for sandbox I/O; bounds concurrent steps."""
    max_concurrent_requests: int = 1024
    """HTTP requests in flight at most (health and metrics not counted); beyond it 503
    ``overloaded`` with Retry-After at once, never a queue that ends in a timeout. A WebSocket
    counts as one while it is open; its frames are bounded per socket (back-pressure)."""

    judge_base_url: str | None = None
    """An OpenAI-compatible endpoint (``http://host:port/v1``) for LoopTool's label judge
    (``POST .../tasks/{task_id}/judge``); unset, the server has no judge. Its API key, if it
    needs one, comes from ``TOOLGYM_JUDGE_API_KEY``."""
    judge_api_key: str | None = field(default=None, repr=False)
    """The judge endpoint's API key (``TOOLGYM_JUDGE_API_KEY``); never shown in a repr or log."""
    judge_model: str = ""
    """The judge model; several, comma-separated, take the votes in turn."""
    judge_votes: int = 3
    """Judge calls per judgement; a verdict needs more than half of them (LoopTool: 2 of 3)."""
    judge_timeout_s: float = 60.0
    """Bound on one judge call; a slower vote counts as failed."""

    @property
    def instance(self) -> str:
        """The name this server's containers are labelled with: ``instance_id``, else hostname and port.

        A restarted server with the same name removes its predecessor's leftovers.
        """
        if self.instance_id:
            return self.instance_id
        host = socket.gethostname().lower().replace("_", "-")[:24]
        return f"{host}-{self.port}-{os.getpid()}-{_PROCESS_TOKEN}"

    def all_api_keys(self) -> tuple[str, ...]:
        """The API keys from ``api_keys`` and ``api_keys_file`` together, blanks dropped, each once, in order."""
        keys = [k for k in self.api_keys if k]
        if self.api_keys_file:
            keys.extend(read_keys_file(self.api_keys_file))
        return tuple(dict.fromkeys(keys))

    def sandbox_spec(self, labels: dict[str, str]) -> SandboxSpec:
        """The spec of a sandbox started under these settings: ``labels`` and the configured limits.

        The server's pool and ``toolgym generate`` both start theirs from it, so a sandbox is the
        same wherever it was made.
        """
        return SandboxSpec(
            labels=labels, memory_bytes=self.sandbox_memory_bytes,
            max_processes=self.sandbox_max_processes, cpus=self.sandbox_cpus,
        )

    @property
    def auth_enabled(self) -> bool:
        """Whether any API key is configured (read from ``api_keys_file`` too, so it is read again each call)."""
        return bool(self.all_api_keys())

    def validate(self) -> None:
        """Refuse settings that would expose an unauthenticated server, or make no sense."""
        if not self.auth_enabled and not _is_loopback(self.host) and not self.insecure_no_auth:
            raise ValueError(
                f"refusing to serve on {self.host} without API keys: set TOOLGYM_API_KEYS "
                "(or an api_keys_file), or pass --insecure-no-auth to serve unauthenticated"
            )
        if self.backend not in get_args(BackendName):
            raise ValueError(f"backend must be auto, docker or process, not {self.backend!r}")
        if self.isolation not in get_args(IsolationName):
            raise ValueError(f"isolation must be container, namespace or process, not {self.isolation!r}")
        if self.isolation and self.backend != "auto" and (self.backend == "process") != (self.isolation == "process"):
            raise ValueError(f"isolation={self.isolation} contradicts backend={self.backend}: the process tier is"
                             " backend process, the container and namespace tiers need Docker (backend docker);"
                             " set one of them only")
        if self.sandbox_channel not in get_args(ChannelName):
            raise ValueError(f"sandbox_channel must be auto, attach or socket, not {self.sandbox_channel!r}")
        if self.ns_episodes_per_host <= 0 or self.ns_host_max_episodes <= 0:
            raise ValueError("ns_episodes_per_host and ns_host_max_episodes must be positive")
        for name in ("max_live_episodes", "max_request_bytes", "max_action_chars", "max_output_chars",
                     "worker_threads", "max_concurrent_requests"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_live_episodes_per_key < 0 or self.rate_limit_per_key < 0:
            raise ValueError("max_live_episodes_per_key and rate_limit_per_key must be 0 (off) or positive")
        if self.warm_pool_size < 0 or self.warm_pool_size > self.max_live_episodes:
            raise ValueError("warm_pool_size must be between 0 and max_live_episodes")
        if self.warm_pool_max and not self.warm_pool_size <= self.warm_pool_max <= self.max_live_episodes:
            raise ValueError("warm_pool_max must be 0 or between warm_pool_size and max_live_episodes")
        if self.judge_base_url and not self.judge_model.strip():
            raise ValueError("judge_base_url is set but judge_model is not: name the judge model")
        if self.judge_votes < 2:
            raise ValueError("judge_votes must be at least 2 (the judge's verdict is a majority of votes)")
        if self.judge_timeout_s <= 0:
            raise ValueError("judge_timeout_s must be positive")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``TOOLGYM_<FIELD>`` variables (``TOOLGYM_API_KEYS`` comma-separated), then apply ``overrides``.

        ``overrides`` come e.g. from the command line; None values among them are ignored.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"TOOLGYM_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _coerce(name: str, raw: str, hint: Any) -> Any:
    hint = str(hint)
    try:
        if hint.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if hint == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if hint == "int":
            return int(raw)
        if hint == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"TOOLGYM_{name.upper()}={raw!r} is not a valid {hint}") from None
    return raw
