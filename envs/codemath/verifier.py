r"""The CodeMath reward: the trajectory's answer checked by math-verify, server-side, in killable worker processes.

Rule (SimpleTIR's ``recipe/simpletir/utils/reward_score/hf_math_verify.py``): the answer is
extracted from the trajectory (``verify_solution``: SimpleTIR's extraction, ``extract.py``,
run inside the worker; or, in ``boxed`` mode, the caller passes the last complete
``\boxed{}`` to ``verify``), then both the gold and the answer are wrapped in ``\boxed{}``
when they are not already, parsed with ``math_verify.parse``, and compared with
``math_verify.verify(gold, target)``; anything that fails to parse scores 0.

Why processes (docs/architecture.md): math-verify's timeouts use ``SIGALRM``, which raises outside the
main thread, and hostile LaTeX can hang sympy in C code. Each ``VerifierPool`` worker is a
small Python process (``_verify_worker.py``) answering one JSON line per request; a request
that overruns ``timeout_s`` kills its worker (the verdict is ``timeout``, reward 0) and a fresh
one starts on next use. Requests never run in the sandbox: the policy must not be able to
reach its own reward.

    pool = VerifierPool(workers=2, timeout_s=5.0)
    pool.verify("1/2", "\\frac{1}{2}")   # Verdict(correct=True, status="ok")
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolgym.errors import Unavailable

__all__ = ["Verdict", "VerdictStatus", "VerifierPool", "default_pool", "wrap_boxed"]

VerdictStatus = Literal["ok", "no_answer", "unparsable", "gold_unparsable", "timeout", "error"]
"""``ok``: compared (``correct`` says how it went); ``no_answer``: no answer to read;
``unparsable`` / ``gold_unparsable``: math-verify got nothing out of it; ``timeout``: the
check overran and was stopped; ``error``: the check raised or its worker crashed."""

WORKER_SCRIPT = Path(__file__).with_name("_verify_worker.py")


@dataclass(frozen=True)
class Verdict:
    """One check's outcome.

    ``answer`` is the text that was judged when the worker extracted it (``verify_solution``),
    so a caller can show why a reward is 0.
    """

    correct: bool
    status: VerdictStatus
    answer: str | None = None


def wrap_boxed(text: str) -> str:
    r"""SimpleTIR: wrap in ``\boxed{}`` unless the text already contains ``\boxed``."""
    return text if "\\boxed" in text else f"\\boxed{{{text}}}"


class _WorkerGone(Exception):
    """The worker closed its pipe (crashed) or could not be started."""


class _Worker:
    """One ``_verify_worker.py`` process and the line protocol to it."""

    def __init__(self, startup_timeout_s: float) -> None:
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(WORKER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                close_fds=True,
                start_new_session=True,  # a Ctrl-C to the server's group is the server's business
            )
        except OSError as exc:
            raise _WorkerGone(f"cannot start the math-verify worker: {exc}") from exc
        self.calls = 0
        self._buffer = b""
        try:
            reply = self._read(startup_timeout_s)
        except _WorkerGone:
            self.kill()
            raise
        if reply is None or not reply.get("ready"):
            self.kill()
            raise _WorkerGone(
                f"the math-verify worker did not start within {startup_timeout_s} s "
                "(raise startup_timeout_s, or check that math-verify is installed)"
            )

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """Send one request; the reply, or None when ``timeout_s`` passed first."""
        self.calls += 1
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise _WorkerGone(str(exc)) from exc
        return self._read(timeout_s)

    def _read(self, timeout_s: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise _WorkerGone("the math-verify worker exited")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise _WorkerGone("the math-verify worker answered garbage") from exc
        if not isinstance(reply, dict):
            raise _WorkerGone("the math-verify worker answered garbage")
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed child always exits
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class VerifierPool:
    """A few math-verify worker processes shared by all CodeMath episodes (thread-safe).

    Workers start lazily, one per concurrent caller up to ``workers``; a caller beyond that
    waits for a free one. ``timeout_s`` bounds one check (SimpleTIR gives its scorer 5 s);
    a worker that overruns it is killed and replaced, and so is one that served
    ``max_calls_per_worker`` requests (sympy caches grow). A pool is a context manager;
    ``close`` is idempotent.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 5.0,
        startup_timeout_s: float = 60.0,
        max_calls_per_worker: int = 5000,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.max_calls_per_worker = max_calls_per_worker
        self._slots: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(workers):
            self._slots.put(None)
        self._lock = threading.Lock()
        self._live: set[_Worker] = set()
        self._closed = False

    # -- public ----------------------------------------------------------------------------

    def verify(self, gold: str, answer: str | None) -> Verdict:
        r"""Is ``answer`` (the content of the policy's last ``\boxed{}``, or None) equal to ``gold`` for math-verify?

        Never raises for a bad answer; raises ``Unavailable`` only when no worker can be started
        (an infrastructure failure, not a 0 reward).
        """
        if answer is None:
            return Verdict(False, "no_answer")
        reply = self._call({"op": "verify", "gold": wrap_boxed(gold), "target": wrap_boxed(answer)})
        if reply is None:
            return Verdict(False, "timeout")
        return Verdict(bool(reply.get("correct")), _status(reply))

    def verify_solution(self, gold: str, solution: str) -> Verdict:
        r"""Judge a whole trajectory as SimpleTIR's reward does.

        The worker extracts the answer (``extract.simpletir_answer``: ``\boxed``, "the answer is",
        "答案是", the last number ...) and compares it with ``gold``; ``no_answer`` when it
        extracted nothing.
        """
        reply = self._call({"op": "solution", "gold": wrap_boxed(gold), "text": solution})
        if reply is None:
            return Verdict(False, "timeout")
        answer = reply.get("answer")
        return Verdict(bool(reply.get("correct")), _status(reply), answer if isinstance(answer, str) else None)

    def check_gold(self, gold: str) -> Verdict:
        """Whether math-verify parses ``gold`` at all: the verdict's ``correct`` is True when it does."""
        reply = self._call({"op": "parse", "text": wrap_boxed(gold)})
        if reply is None:
            return Verdict(False, "timeout")
        status = _status(reply)
        return Verdict(status == "ok", "gold_unparsable" if status == "unparsable" else status)

    def close(self) -> None:
        """Kill every worker. Idempotent; a closed pool refuses new checks."""
        with self._lock:
            self._closed = True
            live, self._live = self._live, set()
        for worker in live:
            worker.kill()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def live_workers(self) -> int:
        """Worker processes alive now; workers start on first use, and a killed one is replaced only then."""
        with self._lock:
            return sum(1 for w in self._live if w.alive())

    # -- internals -------------------------------------------------------------------------

    def _call(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if self._closed:
            raise Unavailable("the math-verify pool is closed")
        worker = self._slots.get()
        try:
            if worker is None or not worker.alive() or worker.calls >= self.max_calls_per_worker:
                if worker is not None:
                    self._retire(worker)
                worker = None
                worker = self._spawn()
            try:
                reply = worker.call(request, self.timeout_s)
            except _WorkerGone:
                self._retire(worker)
                worker = None
                return {"status": "error", "correct": False}
            if reply is None:
                self._retire(worker)
                worker = None
            return reply
        finally:
            self._slots.put(worker)

    def _spawn(self) -> _Worker:
        try:
            worker = _Worker(self.startup_timeout_s)
        except _WorkerGone as exc:
            raise Unavailable(f"math-verify worker unavailable: {exc}", retry_after_s=1.0) from exc
        with self._lock:
            if self._closed:
                worker.kill()
                raise Unavailable("the math-verify pool is closed")
            self._live.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._live.discard(worker)


_STATUSES: dict[str, VerdictStatus] = {
    "ok": "ok",
    "no_answer": "no_answer",
    "unparsable": "unparsable",
    "gold_unparsable": "gold_unparsable",
    "timeout": "timeout",
    "error": "error",
}


def _status(reply: dict[str, Any]) -> VerdictStatus:
    return _STATUSES.get(str(reply.get("status")), "error")


_default: VerifierPool | None = None
_default_lock = threading.Lock()


def default_pool() -> VerifierPool:
    """The process-wide pool CodeMath families use unless given one; closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = VerifierPool()
            atexit.register(_default.close)
        return _default
