r"""A math-verify worker process: one JSON request per line on stdin, one JSON reply per line.

Run as a script (``python -I _verify_worker.py``), never imported by the server: it needs only
the standard library and ``math_verify``. The server kills it when a request overruns, so
nothing in here has to be trusted to stop.

Why a process: math-verify's own timeouts use ``signal.alarm``, which works only in a main
thread (the server's request threads are not), and hostile LaTeX (``9^{9^{9^{9}}}``,
``(2^{2^{30}})!``) can keep sympy or GMP busy in C code that no signal interrupts. Here the
calls run in this process's main thread, so math-verify's alarms work as designed, and the
parent's hard deadline covers whatever they cannot stop.

Requests: ``{"op": "verify", "gold": str, "target": str}`` and ``{"op": "parse", "text": str}``,
both texts already wrapped in ``\boxed{}``; and ``{"op": "solution", "gold": str, "text": str}``:
the answer is first extracted from the whole trajectory ``text`` the way SimpleTIR's reward
does (``extract.py``, loaded by path: this script sees no package), then wrapped and judged
like ``verify``. Extraction runs here, not in the server, because some of its regular
expressions are quadratic on long inputs and only this process can be killed mid-way.
Replies carry ``status``: ``ok``, ``no_answer`` (extraction found nothing), ``unparsable``
(the target gave nothing), ``gold_unparsable``, ``timeout`` (math-verify's own alarm fired)
or ``error``; a verify or solution reply also carries ``correct``, a solution reply
``answer`` (the extracted text).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from types import ModuleType
from typing import Any

MEMORY_LIMIT_BYTES = 2 * 1024**3
"""Address-space cap, so ``2^{2^{40}}`` ends in a MemoryError, not in the host's OOM killer."""
INNER_TIMEOUT_S = 3
"""math-verify's own per-parse / per-comparison alarm (whole seconds)."""
CPU_BUDGET_S = 30
"""CPU seconds one request may use before the kernel ends this worker (see below)."""


class _TimeoutSeen(logging.Handler):
    """math-verify reports its alarms only as warnings; this notices them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        if "Timeout" in record.getMessage():
            self.seen = True


def _limit_cpu_from_now() -> None:
    """Allow the next request at most ``CPU_BUDGET_S`` of CPU time (SIGXCPU ends the worker).

    The server kills a worker that overruns long before this; the budget is for the case the
    server cannot: it died while this process was stuck in C code, where no signal handler
    and no pipe EOF is noticed. (``PR_SET_PDEATHSIG`` would fire when the *thread* that
    started the worker exits, which in a threaded server is any time.)
    """
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = int(usage.ru_utime + usage.ru_stime) + 1
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = used + CPU_BUDGET_S
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass


def _load_extract() -> ModuleType:
    """``extract.py`` from this directory, imported by path (``-I`` keeps the package away)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "extract.py")
    spec = importlib.util.spec_from_file_location("_toolgym_codemath_extract", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships beside this one
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wrap_boxed(text: str) -> str:
    r"""SimpleTIR: wrap in ``\boxed{}`` unless the text already contains ``\boxed``."""
    return text if "\\boxed" in text else f"\\boxed{{{text}}}"


def main() -> None:
    # Replies go to a private copy of stdout; anything a library prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass

    from math_verify import parse, verify

    extract = _load_extract()
    seen = _TimeoutSeen()
    logging.getLogger("math_verify").addHandler(seen)

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        seen.seen = False
        if request.get("op") == "parse":
            parsed = parse(request["text"], parsing_timeout=INNER_TIMEOUT_S)
            if parsed:
                return {"status": "ok"}
            return {"status": "timeout" if seen.seen else "unparsable"}
        if request.get("op") == "solution":
            answer = extract.simpletir_answer(request["text"])
            if not answer:
                return {"status": "no_answer", "correct": False, "answer": ""}
            reply = judge(request["gold"], _wrap_boxed(answer))
            reply["answer"] = answer
            return reply
        return judge(request["gold"], request["target"])

    def judge(gold_text: str, target_text: str) -> dict[str, Any]:
        gold = parse(gold_text, parsing_timeout=INNER_TIMEOUT_S)
        if not gold:
            return {"status": "timeout" if seen.seen else "gold_unparsable", "correct": False}
        target = parse(target_text, parsing_timeout=INNER_TIMEOUT_S)
        if not target:
            return {"status": "timeout" if seen.seen else "unparsable", "correct": False}
        correct = bool(verify(gold, target, timeout_seconds=INNER_TIMEOUT_S))
        return {"status": "timeout" if seen.seen and not correct else "ok", "correct": correct}

    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        _limit_cpu_from_now()
        try:
            reply = handle(json.loads(line))
        except Exception as exc:  # MemoryError, RecursionError, anything sympy throws
            reply = {"status": "error", "correct": False, "detail": type(exc).__name__}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
