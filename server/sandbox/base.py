"""The sandbox contract: what an env may ask of the box its untrusted code runs in.

Two planes, kept apart as in E2B's SDK:

- the *control plane* (``SandboxBackend``): create a sandbox for an episode, list and remove
  the ones a server instance owns, report health. It knows nothing of reset or step.
- the *data plane* (``Sandbox``): run one piece of code in a fresh process inside the box and
  return what it printed and, for a function call, what it returned. Its request and result
  types are the env side's runner contract (``toolgym.envs.runner``).

A user-code failure (an exception, a timeout, a memory error) is data in ``RunResult``; an
infrastructure failure (the box died or stopped answering) is a ``SandboxError``. Every backend
speaks to the same stdlib-only agent (``agent.py``) over one persistent stream, so a call costs
a JSON line each way, not a process launch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from toolgym.envs.runner import RunRequest, RunResult

__all__ = [
    "Sandbox",
    "SandboxBackend",
    "SandboxSpec",
]


@runtime_checkable
class Sandbox(Protocol):
    """One episode's box.

    Each ``run`` is a fresh process: nothing leaks between runs except files the code leaves in
    the work dir.
    """

    @property
    def id(self) -> str:
        """The backend's name for this box; errors and logs use it."""
        ...

    def run(self, request: RunRequest) -> RunResult:
        """Run code; blocks up to ``limits.timeout_s`` plus a small grace.

        Raises ``SandboxError`` when the sandbox itself fails (then it is unusable).
        """
        ...

    def run_many(self, requests: Sequence[RunRequest]) -> list[RunResult]:
        """Run ``requests`` concurrently, each a fresh process under its own limits; results in call order.

        Raises ``SandboxError`` as ``run`` does (then no result is returned).
        """
        ...

    def ping(self, timeout_s: float = 5.0) -> bool:
        """Whether the sandbox's agent answers within ``timeout_s``; never raises."""
        ...

    def close(self) -> bool:
        """Destroy the sandbox. Idempotent: returns False when it was already gone."""
        ...


@dataclass(frozen=True)
class SandboxSpec:
    """What a new sandbox is for: its labels (server instance, episode, owner) and limits."""

    labels: dict[str, str]
    memory_bytes: int = 768 * 1024 * 1024
    max_processes: int = 64
    cpus: float = 1.0
    workdir_bytes: int = 64 * 1024 * 1024


class SandboxBackend(Protocol):
    """The control plane of one kind of sandbox (Docker containers, local processes)."""

    name: str
    isolated: bool
    """False for backends that do not isolate code from the host; the server says so loudly."""

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Start a sandbox and wait until its agent answers. Raises ``SandboxError``."""
        ...

    def remove_owned(self, instance: str | None = None) -> int:
        """Remove the sandboxes this backend made; returns how many were removed.

        With ``instance`` None, all instances' are removed, i.e. orphans of dead servers too.
        """
        ...

    def check(self) -> None:
        """Raise ``SandboxError`` when the backend cannot create sandboxes now."""
        ...

    def close(self) -> None:
        """Release the backend's own resources (clients, sockets)."""
        ...
