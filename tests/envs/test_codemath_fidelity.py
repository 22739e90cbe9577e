"""CodeMath runs code as SimpleTIR's sandbox does (ltzheng/SimpleTIR ``sandbox/sandbox_api.py``:
the block, with its prelude, written to ``main.py`` in a temp dir and run as ``python3 main.py``
under firejail with ``rlimit nproc 50``, ``rlimit as 512M`` and a 3 s wall clock; the whole
output read, then cut to 512 characters by ``truncate_content``), in real sandboxes of both
backends where the fixtures allow (Docker needs the engine; the process backend's limit per
run needs a uid of its own, i.e. root)."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolgym.envs.base import Runner, Task
from toolgym.envs.codemath import CodeMathEpisode, CodeMathFamily, VerifierPool
from toolgym.envs.codemath.env import MEMORY_BYTES, PROCESS_LIMIT
from toolgym.envs.codemath.parsing import truncate_middle
from toolgym.envs.codemath.program import build_program
from toolgym.envs.runner import RunRequest, RunResult
from toolgym.server.sandbox.base import SandboxBackend, SandboxSpec

HOST_PYTHON = shutil.which("python3") or sys.executable


@pytest.fixture(scope="module")
def family() -> Iterator[CodeMathFamily]:
    with VerifierPool(workers=1) as pool:
        yield CodeMathFamily(verifier=pool)


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "process"])
def runner(request: pytest.FixtureRequest) -> Iterator[Runner]:
    """A sandbox of each backend, made as the server makes them (the default spec)."""
    backend: SandboxBackend = request.getfixturevalue(f"{request.param}_backend")
    box = backend.create(SandboxSpec(labels={"toolgym.episode": f"test-{uuid.uuid4().hex[:8]}"}))
    yield box.run
    box.close()


class Recorder:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.requests: list[RunRequest] = []
        self.results: list[RunResult] = []

    def __call__(self, request: RunRequest) -> RunResult:
        self.requests.append(request)
        self.results.append(self.runner(request))
        return self.results[-1]


def start(family: CodeMathFamily, runner: Runner) -> CodeMathEpisode:
    task = Task(env_id=family.env_id, id="t", split="test", record={"question": "6 * 7?", "answer": "42"})
    episode = family.start(task, family.parse_options({}, "test"), runner, random.Random(0))
    episode.reset()
    return episode


def block(source: str) -> str:
    return f"Let me compute.\n```python\n{source}\n```"


def observation(step: object) -> str:
    content = step.observation.messages[0]["content"]  # type: ignore[attr-defined]
    assert isinstance(content, str)
    return content


def python3_main_py_stderr(program: str, tmp_path: Path) -> str:
    """What SimpleTIR's sandbox gets on stderr for ``program``: run it as ``python3 main.py``
    in a temp dir on this host."""
    (tmp_path / "main.py").write_text(program, encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([HOST_PYTHON, "main.py"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=30, check=False)
    assert done.stderr, "the case must write to stderr"
    return done.stderr


def without_dirs(stderr: str) -> str:
    """``stderr`` with the directory of ``main.py`` removed (a temp dir here, the work dir there)."""
    stderr = re.sub(r'File "[^"]*/main\.py"', 'File "main.py"', stderr)
    return re.sub(r"(?m)^\S*/main\.py:", "main.py:", stderr)


def test_codemath_limits_are_simpletirs(family: CodeMathFamily, runner: Runner) -> None:
    rec = Recorder(runner)
    start(family, rec).step(block("print(1)"))
    (limits,) = [r.limits for r in rec.requests]
    assert limits.timeout_s == 3.0 and limits.memory_bytes == MEMORY_BYTES == 512 * 1024 * 1024
    assert limits.max_processes == PROCESS_LIMIT == 50


def test_a_run_holds_at_most_50_processes(family: CodeMathFamily, runner: Runner) -> None:
    """SimpleTIR's ``rlimit nproc 50``: code that tries to hold 60 processes (itself and 59
    children) gets exactly 50; the 51st fork fails as it does there."""
    source = (
        "import os, time\n"
        "held = 1\n"
        "for _ in range(59):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        print(type(exc).__name__)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    held += 1\n"
        "print(held)"
    )
    if runner.__self__.id.startswith("proc-") and os.geteuid() != 0:  # type: ignore[attr-defined]
        pytest.skip("without root the process backend has no uid per sandbox to count processes by")
    episode = start(family, runner)
    assert observation(episode.step(block(source))) == "\nCode execution result: BlockingIOError\n50\n\n"
    assert observation(episode.step(block(source))) == "\nCode execution result: BlockingIOError\n50\n\n"


def test_a_long_output_shows_its_real_end(family: CodeMathFamily, runner: Runner) -> None:
    """3 MB of output, past the sandbox's byte cap: the observation is SimpleTIR's cut of the
    *whole* output, so its last 256 characters are the real last 256."""
    source = "import sys\nsys.stdout.write(''.join('line %07d\\n' % i for i in range(240000)) + 'THE END ' * 40)"
    full = "".join(f"line {i:07d}\n" for i in range(240000)) + "THE END " * 40
    assert len(full) > 2_500_000
    step = start(family, runner).step(block(source))
    expected = "\nCode execution result: " + truncate_middle(full)[0] + "\n"
    assert observation(step) == expected
    assert observation(step).endswith(full[-256:] + "\n")
    assert step.info["output_truncated"] is True


def test_a_long_stderr_shows_its_real_last_line(family: CodeMathFamily, runner: Runner) -> None:
    source = (
        "import sys\nsys.stderr.write(''.join('warning %d\\n' % i for i in range(200000)))\n"
        "raise ValueError('last')"
    )
    step = start(family, runner).step(block(source))
    assert observation(step) == "\nCode execution result: ValueError: last\n"


CASES = {
    "warning": "import warnings\n\nx = 3\nwarnings.warn('x is %d' % x)\nprint('after')",
    "deprecation": "import warnings\nwarnings.warn('old api', DeprecationWarning)",
    "exception": "def f(x):\n    return 1 / x\n\nprint(f(2))\nf(0)",
    "syntax": "x = (1,\nprint(x)",
    "keyerror": "d = {}\nd['missing']",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stderr_last_line_is_what_python3_main_py_prints(
    family: CodeMathFamily, runner: Runner, case: str, tmp_path: Path
) -> None:
    """SimpleTIR runs ``python3 main.py``, so a warning's last stderr line is its source
    line, and a traceback's frames name ``main.py``."""
    source = CASES[case]
    stderr = python3_main_py_stderr(build_program(source), tmp_path)
    expected = stderr.splitlines()[-1]
    rec = Recorder(runner)
    step = start(family, rec).step(block(source))
    (result,) = rec.results
    assert result.stderr.splitlines()[-1] == expected
    assert observation(step) == f"\nCode execution result: {expected}\n"
    # Not only the last line: the whole of stderr is the interpreter's, but for the directory.
    assert without_dirs(result.stderr) == without_dirs(stderr)
    if case == "warning":
        assert expected == "  warnings.warn('x is %d' % x)"
        assert "main.py:8: UserWarning: x is 3" in result.stderr
    if case == "exception":
        assert 'main.py", line 9, in <module>' in result.stderr and 'main.py", line 6, in f' in result.stderr


def test_the_code_runs_as_main_py(family: CodeMathFamily, runner: Runner) -> None:
    source = "import os, sys\nprint(os.path.basename(__file__), sys.argv, open(__file__).read().count('final_answer'))"
    step = start(family, runner).step(block(source))
    assert observation(step) == "\nCode execution result: main.py ['main.py'] 2\n\n"


def test_the_interpreter_exit_is_python3s(family: CodeMathFamily, runner: Runner) -> None:
    """As at the end of ``python3 main.py``: non-daemon threads are waited for, then atexit
    handlers run."""
    source = (
        "import atexit, threading, time\n"
        "atexit.register(print, 'at exit')\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('late thread'))).start()\n"
        "print('main done')"
    )
    step = start(family, runner).step(block(source))
    assert observation(step) == "\nCode execution result: main done\nlate thread\nat exit\n\n"
