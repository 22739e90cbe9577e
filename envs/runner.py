"""The runner contract: what an episode may ask of the box its untrusted code runs in.

An env family never sees a container or a process. When one of its episodes needs to run
untrusted code (a generated tool, model-written Python) it builds a ``RunRequest`` and hands it
to the ``Runner`` it was given; the server decides where that runs (``toolgym.server.sandbox``)
and hands back a ``RunResult``. Keeping the contract here, on the env side, lets ``envs/``
import nothing from the server.

A user-code failure (an exception, a timeout, a memory error) is data in ``RunResult``; an
infrastructure failure (the box died or stopped answering) is raised as ``SandboxError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from toolgym.errors import SandboxError

__all__ = [
    "FunctionCall",
    "RunLimits",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "Runner",
    "run_all",
]

RunStatus = Literal["ok", "error", "timeout", "killed"]
"""``ok``: ran to the end; ``error``: raised / exited non-zero; ``timeout``: stopped at the
run's ``timeout_s``; ``killed``: ended by a signal (e.g. the kernel's OOM killer)."""


@dataclass(frozen=True)
class RunLimits:
    """Per-run limits, enforced inside the sandbox on the process that runs the code and all it starts.

    An env family sets the ones its method fixes (CodeMath: SimpleTIR's 3 s, 512 MB, 50
    processes); the sandbox's own limits (``SandboxSpec``) stay a ceiling.
    """

    timeout_s: float = 10.0
    memory_bytes: int = 512 * 1024 * 1024
    """``RLIMIT_AS`` of the run's processes."""
    max_output_bytes: int = 1024 * 1024
    """Bytes kept per stream (stdout, stderr): the first half and the last half of the cap,
    so the real end of a long output survives; the middle is read and dropped, and
    ``stdout_truncated``/``stderr_truncated`` say so. Streams are joined head + tail with
    nothing in between (a marker could be mistaken for output)."""
    max_value_bytes: int = 16 * 1024 * 1024
    """The largest return value of a ``call`` (its UTF-8 JSON form) that comes back. A value
    is never cut, because verifiers read all of it: a larger one is an ``OutputTooLarge``
    error with ``value_truncated`` set. A hard memory cap, not a display limit."""
    max_processes: int | None = None
    """Processes (and threads) the run's own tree may hold at once, counting the run's own
    process: the next fork fails with ``EAGAIN``, as under ``RLIMIT_NPROC`` for a user with
    nothing else running. None leaves the sandbox's limit. The process backend enforces it
    only where each sandbox has a uid of its own (the server runs as root)."""


@dataclass(frozen=True)
class FunctionCall:
    """Call ``function(**arguments)`` after the code has defined it; the return value comes back as text.

    The text is ``json.dumps(value, ensure_ascii=False)`` for a dict or list, else ``str``
    (FTRL's rule).
    """

    function: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class RunRequest:
    """One run in the sandbox: ``code``, then ``call`` on what it defined if one is given, under ``limits``."""
    code: str
    call: FunctionCall | None = None
    limits: RunLimits = field(default_factory=RunLimits)


@dataclass(frozen=True)
class RunResult:
    """What one run produced; ``status`` says how it ended.

    A stream over its limit keeps its head and tail (the ``*_truncated`` flags say so), so the
    real end of a long output survives.
    """
    status: RunStatus
    stdout: str = ""
    stderr: str = ""
    value: str | None = None
    """The formatted return value of ``call``, when it returned."""
    error: str | None = None
    """Why the run failed: ``str(exception)`` when the call raised (FTRL's message), or a
    description of a timeout, a signal or a non-zero exit."""
    error_type: str | None = None
    """The exception's class name when the call raised."""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    value_truncated: bool = False
    """The return value was over ``max_value_bytes``; ``status`` is then ``error`` with
    ``error_type`` ``OutputTooLarge``."""
    duration_s: float = 0.0


Runner = Callable[[RunRequest], RunResult]
"""Runs code in the episode's sandbox. Raises ``SandboxError`` when the sandbox fails."""


def run_all(runner: Runner, requests: Sequence[RunRequest]) -> list[RunResult]:
    """Run ``requests`` (one turn's parallel calls) and return their results in the same order.

    A runner that also has ``run_many(requests)`` (the server's sandbox does) runs them at once,
    each in its own process under its own limits; any other runner runs them one after another.
    Either way the results are the same; only the wall time differs.
    """
    many = getattr(runner, "run_many", None)
    if len(requests) < 2 or not callable(many):
        return [runner(r) for r in requests]
    results = list(many(requests))
    if len(results) != len(requests):
        raise SandboxError(f"run_many returned {len(results)} results for {len(requests)} requests")
    return results
