"""The server's side of the agent protocol, shared by every backend.

A backend supplies a ``Channel`` (bytes to the agent's stdin, bytes from its stdout); this
module turns it into a ``Sandbox``: send one JSON line, wait for one JSON line, within a
deadline. A sandbox whose agent misses a deadline, closes its stream or answers out of step
is *broken*: it raises ``SandboxError`` from then on and the server replaces it.

A run's ``max_processes`` is enforced by the agent where the sandbox has a uid of its own
(``RLIMIT_NPROC``); where it does not (Docker: every container's user is the same host uid),
the backend passes ``set_process_limit``, which sets the box's own limit (the container's pids
limit) before the first run that asks for a different one: one engine call per sandbox.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from toolgym.envs.runner import RunLimits, RunRequest, RunResult
from toolgym.errors import SandboxError, SandboxTimeout

__all__ = ["AGENT_SOURCE", "AgentSandbox", "Channel"]

log = logging.getLogger(__name__)

AGENT_SOURCE = (Path(__file__).parent / "agent.py").read_text(encoding="utf-8")
"""Passed to ``python3 -c`` in the sandbox, so no host file is ever mounted in."""

MAX_REPLY_BYTES = 128 * 1024 * 1024
"""The floor of the reply bound; a run's own bound grows with its caps (``_reply_bound``)."""
MAX_BATCH = 64
"""The agent's bound on one ``run_many`` (``agent.MAX_BATCH``); longer batches go in slices."""
JSON_ESCAPE_FACTOR = 6
"""The agent's replies are ASCII JSON: one byte of output is at most six (``\\u0001``)."""


def _reply_bound(limits: RunLimits) -> int:
    """The largest honest reply to a run with ``limits``: every stream at its cap, escaped."""
    streams = 2 * limits.max_output_bytes + limits.max_value_bytes
    return max(MAX_REPLY_BYTES, JSON_ESCAPE_FACTOR * streams + (1 << 20))


class Channel(ABC):
    """A byte stream to one agent."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Write all of ``data``; raise ``OSError`` if the stream is gone."""

    @abstractmethod
    def read_chunk(self, timeout_s: float) -> bytes:
        """Up to some bytes of the agent's stdout; ``b""`` at end of stream.

        Raises ``TimeoutError`` if nothing came within ``timeout_s``.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the stream (idempotent)."""

    def diagnostics(self) -> str:
        """What the agent wrote to stderr, if the channel keeps it (for error messages)."""
        return ""

    def fileno(self) -> int | None:
        """A descriptor that turns readable when data or the end of the stream arrives (None: no such).

        Lets a caller wait on this stream beside other sockets with ``select``.
        """
        return None


class AgentSandbox:
    """A ``Sandbox`` driven over a ``Channel``; ``destroy`` removes the box itself."""

    def __init__(
        self,
        sandbox_id: str,
        channel: Channel,
        destroy: Callable[[], bool],
        *,
        reply_grace_s: float = 5.0,
        set_process_limit: Callable[[int | None], None] | None = None,
    ) -> None:
        self._id = sandbox_id
        self._channel = channel
        self._destroy = destroy
        self._grace = reply_grace_s
        self._set_process_limit = set_process_limit
        self._process_limit: int | None = None
        """The ``max_processes`` the box is set for now (None: the sandbox's own limit)."""
        self._buf = bytearray()
        self._lock = threading.Lock()
        """Serializes requests: one run at a time per sandbox."""
        self._close_lock = threading.Lock()
        self._next_id = 0
        self._broken: str | None = None
        self._closed = False
        self.hello: dict[str, Any] = {}

    @property
    def id(self) -> str:
        """The backend's name for this box (a container name, or the process backend's id); errors and logs use it."""
        return self._id

    def _read_line(self, deadline: float, max_bytes: int = MAX_REPLY_BYTES) -> bytes:
        """The next line (without its newline) from the agent; raises ``TimeoutError`` or ``EOFError``.

        Each chunk is searched once: scanning the whole buffer again per chunk would be quadratic
        in a reply of hundreds of MiB that arrives in socket-buffer-sized chunks.
        """
        scanned = 0
        while True:
            nl = self._buf.find(b"\n", scanned)
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if len(self._buf) > max_bytes:
                raise SandboxError(f"sandbox {self._id}: reply larger than {max_bytes} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            chunk = self._channel.read_chunk(remaining)
            if not chunk:
                raise EOFError
            scanned = len(self._buf)
            self._buf += chunk

    def _fail(self, why: str, timeout: bool = False) -> SandboxError:
        self._broken = why
        diag = self._channel.diagnostics().strip()
        message = f"sandbox {self._id} failed: {why}" + (f" (agent stderr: {diag[-500:]})" if diag else "")
        log.warning(message)
        cls = SandboxTimeout if timeout else SandboxError
        return cls(message, sandbox_id=self._id)

    @classmethod
    def start(
        cls,
        sandbox_id: str,
        channel: Channel,
        destroy: Callable[[], bool],
        timeout_s: float,
        *,
        set_process_limit: Callable[[int | None], None] | None = None,
    ) -> AgentSandbox:
        """A sandbox whose agent has said hello within ``timeout_s``.

        On failure the box is destroyed and ``SandboxError`` raised. ``set_process_limit`` (module doc)
        is for backends whose agent cannot bound a run's processes itself.
        """
        sandbox = cls(sandbox_id, channel, destroy, set_process_limit=set_process_limit)
        try:
            sandbox.wait_ready(timeout_s)
        except SandboxError:
            sandbox.close()
            raise
        return sandbox

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the agent's hello line; raise ``SandboxError`` naming the knob."""
        try:
            line = self._read_line(time.monotonic() + timeout_s)
        except TimeoutError:
            raise self._fail(
                f"the agent did not start within sandbox_start_timeout_s={timeout_s:g}", timeout=True
            ) from None
        except (EOFError, OSError) as exc:
            raise self._fail(f"the agent exited during start ({exc or 'end of stream'})") from exc
        try:
            hello = json.loads(line)
        except ValueError:
            raise self._fail(f"unexpected first line from the agent: {line[:200]!r}") from None
        if not isinstance(hello, dict) or hello.get("hello") != "toolgym-agent":
            raise self._fail(f"unexpected first line from the agent: {line[:200]!r}")
        self.hello = hello
        return hello

    def _request(self, payload: dict[str, Any], wait_s: float, max_reply: int = MAX_REPLY_BYTES) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise SandboxError(f"sandbox {self._id} is closed", sandbox_id=self._id)
            if self._broken:
                raise SandboxError(f"sandbox {self._id} is unusable: {self._broken}", sandbox_id=self._id)
            self._next_id += 1
            rid = self._next_id
            payload = {**payload, "id": rid}
            try:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"
            except (TypeError, ValueError) as exc:
                # Arguments that are not JSON never reach the sandbox; the caller checks first.
                raise ValueError(f"request is not JSON-serializable: {exc}") from exc
            try:
                self._channel.send(data)
                line = self._read_line(time.monotonic() + wait_s, max_reply)
            except TimeoutError:
                raise self._fail(f"no reply within {wait_s:g} s (the agent is wedged)", timeout=True) from None
            except (EOFError, OSError) as exc:
                raise self._fail(f"the agent's stream closed ({exc or 'end of stream'})") from exc
            try:
                reply = json.loads(line)
            except ValueError:
                raise self._fail(f"unreadable reply {line[:200]!r}") from None
            if not isinstance(reply, dict) or reply.get("id") != rid:
                raise self._fail(f"reply out of step: {line[:200]!r}")
            if reply.get("status") == "protocol_error":
                raise SandboxError(f"sandbox {self._id} refused the request: {reply.get('error')}")
            return reply

    def ping(self, timeout_s: float = 5.0) -> bool:
        """Whether the agent answers within ``timeout_s``.

        A failure marks the box unusable and answers False instead of raising (the pool discards such
        a box).
        """
        try:
            return bool(self._request({"op": "ping"}, timeout_s).get("pong"))
        except SandboxError:
            return False

    def _use_process_limit(self, max_processes: int | None) -> None:
        """Set the box's own process limit for runs asking ``max_processes`` (module doc), once per change."""
        if self._set_process_limit is None or max_processes == self._process_limit:
            return
        with self._lock:
            if self._closed or self._broken:
                why = self._broken or "closed"
                raise SandboxError(f"sandbox {self._id} is unusable: {why}", sandbox_id=self._id)
            try:
                self._set_process_limit(max_processes)
            except Exception as exc:
                raise self._fail(f"could not set its process limit to {max_processes} ({exc})") from exc
            self._process_limit = max_processes

    @staticmethod
    def _payload(request: RunRequest) -> dict[str, Any]:
        limits = request.limits
        return {
            "op": "run",
            "code": request.code,
            "call": (
                {"function": request.call.function, "arguments": request.call.arguments}
                if request.call is not None
                else None
            ),
            "timeout_s": limits.timeout_s,
            "memory_bytes": limits.memory_bytes,
            "max_output_bytes": limits.max_output_bytes,
            "max_value_bytes": limits.max_value_bytes,
            "max_processes": limits.max_processes,
        }

    @staticmethod
    def _result(reply: dict[str, Any]) -> RunResult:
        value = reply.get("value")
        return RunResult(
            status=reply.get("status", "error"),
            stdout=str(reply.get("stdout", "")),
            stderr=str(reply.get("stderr", "")),
            value=value if isinstance(value, str) else None,
            error=reply.get("error"),
            error_type=reply.get("error_type"),
            stdout_truncated=bool(reply.get("stdout_truncated")),
            stderr_truncated=bool(reply.get("stderr_truncated")),
            value_truncated=bool(reply.get("value_truncated")),
            duration_s=float(reply.get("duration_s", 0.0)),
        )

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request`` in a fresh process in the box (``Sandbox.run``)."""
        limits = request.limits
        self._use_process_limit(limits.max_processes)
        reply = self._request(self._payload(request), limits.timeout_s + self._grace, _reply_bound(limits))
        return self._result(reply)

    def run_many(self, requests: Sequence[RunRequest]) -> list[RunResult]:
        """Run ``requests`` at once, each in its own fresh process under its own limits; results in order.

        One ``run_many`` line to the agent, which starts every run before waiting on any, so a turn's
        calls take as long as the slowest, not the sum. Runs that ask for ``max_processes`` go one
        after another instead: a process limit that concurrent runs would share (Docker's pids
        limit, the uid's ``RLIMIT_NPROC``) would not be each run's own.
        """
        if len(requests) <= 1 or any(r.limits.max_processes is not None for r in requests):
            return [self.run(r) for r in requests]
        if len(requests) > MAX_BATCH:
            return [result for i in range(0, len(requests), MAX_BATCH)
                    for result in self.run_many(requests[i:i + MAX_BATCH])]
        self._use_process_limit(None)
        payload = {"op": "run_many", "runs": [self._payload(r) for r in requests]}
        wait = max(r.limits.timeout_s for r in requests) + self._grace
        bound = sum(_reply_bound(r.limits) for r in requests)
        reply = self._request(payload, wait, bound)
        results = reply.get("results")
        if not isinstance(results, list) or len(results) != len(requests) or not all(
            isinstance(r, dict) for r in results
        ):
            raise self._fail(f"run_many reply without one result per run: {str(reply)[:200]}")
        return [self._result(r) for r in results]

    def close(self) -> bool:
        """Destroy the sandbox, even while a run is in flight (its caller gets ``SandboxError``).

        Idempotent: False when it was already closed.
        """
        with self._close_lock:
            if self._closed:
                return False
            self._closed = True
        try:
            self._channel.close()
        except OSError as exc:
            log.debug("sandbox %s: closing its stream: %s", self._id, exc)
        return self._destroy()
