"""The program a CodeMath code block becomes before it runs in the episode's sandbox.

Default (SimpleTIR, docs/methods.md#simpletir): the block runs **alone**, no state from earlier turns, with
``final_answer`` defined first. ``FINAL_ANSWER_PRELUDE`` is the source text their
``execute_predictions`` prepends, character for character, so line numbers in tracebacks match.

Stateful mode (``stateful=True``, ToolGym's opt-in notebook extension): every sandbox run is a
fresh process (the ``Sandbox`` contract), so state cannot live in an interpreter between
turns. It is rebuilt instead: the earlier blocks that ran cleanly (status ``ok``, nothing on
stderr) are executed again, in order, in the new program's globals, with their output
discarded (``sys.stdout``/``sys.stderr`` swapped for sinks *and* file descriptors 1 and 2
pointed at ``/dev/null``, so ``os.write`` and child processes stay quiet too), then the new
block runs as top-level code. Re-execution is honest state (variables, functions, imports,
files written to the work dir) at the cost of re-running work; it differs from a live kernel
where earlier code is not deterministic (randomness, time) or failed half-way (a failed block
contributes nothing). A replayed block that raises is skipped. The time limit grows with the
history (see ``run_timeout_s``) so replay does not eat the new block's budget.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["FINAL_ANSWER_PRELUDE", "build_program", "run_timeout_s"]

FINAL_ANSWER_PRELUDE = '\ndef final_answer(result):\n    print(f"\\\\boxed{{{result}}}")\n\n'
"""``final_answer(x)`` prints ``\\boxed{x}``; the text SimpleTIR prepends to every block."""

_REPLAY = """import sys as _toolgym_sys


def _toolgym_replay(_toolgym_cells):
    import io, os
    _toolgym_sys.stdout.flush()
    _toolgym_sys.stderr.flush()
    saved_streams = (_toolgym_sys.stdout, _toolgym_sys.stderr)
    saved_fds = []
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        saved_fds = [(fd, os.dup(fd)) for fd in (1, 2)]
        for fd, _ in saved_fds:
            os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass
    _toolgym_sys.stdout, _toolgym_sys.stderr = io.StringIO(), io.StringIO()
    try:
        for index, source in enumerate(_toolgym_cells):
            try:
                exec(compile(source, f"<cell {index + 1}>", "exec"), globals())
            except BaseException:
                pass
    finally:
        _toolgym_sys.stdout, _toolgym_sys.stderr = saved_streams
        for fd, copy in saved_fds:
            os.dup2(copy, fd)
            os.close(copy)


_toolgym_replay(__CELLS__)
del _toolgym_replay, _toolgym_sys
"""


def build_program(code: str, history: Sequence[str] = ()) -> str:
    """The source to run for ``code``.

    SimpleTIR's prelude, then (stateful mode only) the silent replay of ``history``, then
    ``code`` itself at top level.
    """
    if not history:
        return FINAL_ANSWER_PRELUDE + code
    return FINAL_ANSWER_PRELUDE + _REPLAY.replace("__CELLS__", repr(list(history))) + "\n" + code


def run_timeout_s(timeout_s: float, history: Sequence[str] = ()) -> float:
    """The run's time limit: ``timeout_s`` for the new block plus ``timeout_s`` per replayed block.

    Each replayed block finished within ``timeout_s`` when it first ran.
    """
    return timeout_s * (1 + len(history))
