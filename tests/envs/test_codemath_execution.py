"""CodeMath episodes that run code, against a real sandbox: the ``runner`` fixture
(tests/conftest.py) runs each request in the backend under test. docs/methods.md#simpletir (SimpleTIR)
fixes what the policy sees and when the episode ends; hostile code must come back as data."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

import pytest

from toolgym.envs.base import Runner, Task
from toolgym.envs.codemath import CodeMathEpisode, CodeMathFamily, VerifierPool
from toolgym.envs.codemath import tasks as cm_tasks
from toolgym.envs.runner import RunRequest, RunResult
from toolgym.errors import SandboxError

NOTE = "\n..._This content has been truncated to stay below 512 characters_...\n"


@pytest.fixture(scope="module")
def family() -> Iterator[CodeMathFamily]:
    with VerifierPool(workers=1) as pool:
        yield CodeMathFamily(verifier=pool)


class Recorder:
    """Wraps the real runner to keep the requests it was given."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.requests: list[RunRequest] = []

    def __call__(self, request: RunRequest) -> RunResult:
        self.requests.append(request)
        return self.runner(request)


def start(
    family: CodeMathFamily,
    runner: Runner,
    answer: str = "42",
    question: str = "What is 6 * 7?",
    split: str = "test",
    **options: object,
) -> CodeMathEpisode:
    task = Task(env_id=family.env_id, id="t", split=split, record={"question": question, "answer": answer})
    episode = family.start(task, family.parse_options(options, split), runner, random.Random(0))
    episode.reset()
    return episode


def code(source: str, before: str = "Let me compute.") -> str:
    return f"{before}\n```python\n{source}\n```"


def obs(step: object) -> str:
    content = step.observation.messages[0]["content"]  # type: ignore[attr-defined]
    assert isinstance(content, str)
    return content


# --- the basic loop ------------------------------------------------------------------------


def test_printed_output_is_the_observation_and_the_episode_goes_on(
    family: CodeMathFamily, runner: Runner
) -> None:
    rec = Recorder(runner)
    episode = start(family, rec)
    step = episode.step(code("print(6 * 7)"))
    assert obs(step) == "\nCode execution result: 42\n\n"
    assert step.observation.messages[0]["role"] == "user"
    assert not step.terminated and not step.truncated and step.reward == 0.0
    assert step.info["status"] == "ok" and step.info["run_status"] == "ok" and step.info["void_turn"] is False
    assert "reason" not in step.info and step.info["reward_components"] == {}
    (request,) = rec.requests
    assert request.code.startswith('\ndef final_answer(result):\n    print(f"\\\\boxed{{{result}}}")\n\n')
    assert request.code.endswith("print(6 * 7)")
    assert request.limits.timeout_s == 3.0 and request.limits.memory_bytes == 512 * 1024 * 1024
    step = episode.step("So the product is \\boxed{42}.")
    assert step.terminated and step.reward == 1.0 and step.info["reason"] == "answered"
    assert step.info["metrics"] == {"turns": 2.0, "use_code": 1.0, "valid_code": 1.0, "timeouts": 0.0}


def test_final_answer_in_code_ends_the_episode_and_counts(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner)
    step = episode.step(code("final_answer(6 * 7)"))
    assert obs(step) == "\nCode execution result: \\boxed{42}\n\n"
    assert step.terminated and step.reward == 1.0 and step.info["reason"] == "answered"


def test_final_answer_with_a_wrong_value(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner)
    step = episode.step(code("final_answer(41)"))
    assert step.terminated and step.reward == 0.0


def test_silent_code_gives_an_empty_observation(family: CodeMathFamily, runner: Runner) -> None:
    step = start(family, runner).step(code("x = 1"))
    assert obs(step) == "" and not step.terminated


def test_only_the_first_code_block_runs(family: CodeMathFamily, runner: Runner) -> None:
    rec = Recorder(runner)
    episode = start(family, rec)
    step = episode.step(
        code("print('first')") + "\nAnd then:\n```python\nprint('second')\nfinal_answer(42)\n```"
    )
    assert obs(step) == "\nCode execution result: first\n\n"
    assert not step.terminated
    assert "second" not in rec.requests[0].code


def test_boxed_text_with_code_runs_the_code_and_ends(family: CodeMathFamily, runner: Runner) -> None:
    # SimpleTIR: done because the turn has \boxed{, yet the block runs and its output is
    # appended; the last \boxed{} (here the printed one) is the answer.
    episode = start(family, runner)
    step = episode.step("I guess \\boxed{41}, let me check:\n```python\nfinal_answer(42)\n```")
    assert step.terminated and step.info["reason"] == "answered"
    assert obs(step) == "\nCode execution result: \\boxed{42}\n\n"
    assert step.reward == 1.0


def test_each_block_runs_alone_by_default(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner)
    episode.step(code("x = 41"))
    step = episode.step(code("print(x + 1)"))
    assert obs(step) == "\nCode execution result: NameError: name 'x' is not defined\n"
    assert step.info["metrics"]["valid_code"] == 1.0  # the first block; the second failed


def test_stateful_mode_keeps_state_and_silences_replay(family: CodeMathFamily, runner: Runner) -> None:
    rec = Recorder(runner)
    episode = start(family, rec, stateful=True)
    assert (
        obs(episode.step(code("import math\nx = 41\nprint('once')"))) == "\nCode execution result: once\n\n"
    )
    step = episode.step(code("undefined_name"))  # fails: not replayed later
    assert "NameError" in obs(step)
    step = episode.step(code("def f(v):\n    return v + 1\nprint(f(x), math.pi > 3)"))
    assert obs(step) == "\nCode execution result: 42 True\n\n"
    step = episode.step(code("final_answer(f(x))"))
    assert obs(step) == "\nCode execution result: \\boxed{42}\n\n"
    assert step.reward == 1.0
    assert rec.requests[-1].limits.timeout_s == 9.0  # 3 s + 3 s per replayed block


# --- errors, timeouts and hostile code ------------------------------------------------------


def test_exception_shows_the_last_stderr_line(family: CodeMathFamily, runner: Runner) -> None:
    step = start(family, runner).step(code("print('before')\n1 / 0"))
    assert obs(step) == "\nCode execution result: ZeroDivisionError: division by zero\n"
    assert step.info["status"] == "ok"  # a failing program is data, not a failed step
    assert step.info["run_status"] == "error"
    assert step.info["metrics"]["valid_code"] == 0.0


def test_stderr_and_stdout_at_once_shows_stderr_but_boxed_stdout_still_ends(
    family: CodeMathFamily, runner: Runner
) -> None:
    # SimpleTIR: stderr replaces stdout in the observation, while "\boxed{" in stdout still
    # ends the episode; the answer was not shown, so it is not in the trajectory: reward 0
    # with boxed-only extraction (SimpleTIR's own reads the last number, the 42 in the code).
    source = "import sys\nfinal_answer(42)\nprint('careful', file=sys.stderr)"
    step = start(family, runner, answer_extraction="boxed").step(code(source))
    assert obs(step) == "\nCode execution result: careful\n"
    assert step.terminated and step.info["reason"] == "answered"
    assert step.reward == 0.0 and step.info["verifier_status"] == "no_answer"


def test_code_that_never_ends_times_out(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner, timeout_s=1.0)
    started = time.monotonic()
    # The source must not spell "\\boxed{" itself: SimpleTIR would take that as an answer.
    step = episode.step(code("print('\\\\' + 'boxed{42}', flush=True)\nwhile True:\n    pass"))
    assert time.monotonic() - started < 15.0
    assert obs(step) == "\nCode execution result: Timeout\n"
    assert step.info["status"] == "timeout" and step.info["run_status"] == "timeout"
    assert not step.terminated and not step.truncated  # partial stdout is dropped
    assert step.info["metrics"]["timeouts"] == 1.0
    step = episode.step(code("print(1)"))  # the episode goes on
    assert obs(step) == "\nCode execution result: 1\n\n"


def test_flooded_output_is_truncated(family: CodeMathFamily, runner: Runner) -> None:
    # ~5.5 MB in one write: past the sandbox's byte cap and SimpleTIR's 512 characters.
    step = start(family, runner).step(code("import sys\nsys.stdout.write('0123456789\\n' * 500_000)"))
    text = obs(step)
    assert step.info["output_truncated"] is True
    assert text.startswith("\nCode execution result: 0123456789\n0123456789\n")
    assert NOTE in text
    assert len(text) <= len("\nCode execution result: \n\n") + 512 + len(NOTE)


def test_memory_hog_fails_as_data(family: CodeMathFamily, runner: Runner) -> None:
    step = start(family, runner).step(code("x = bytearray(2 * 1024**3)\nprint(len(x))"))
    assert "Code execution result:" in obs(step)
    assert step.info["run_status"] in ("error", "killed")
    assert not step.terminated


def test_forking_code_comes_back_bounded(family: CodeMathFamily, runner: Runner) -> None:
    source = (
        "import os, time\n"
        "for i in range(200):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "    except OSError:\n"
        "        break\n"
        "print('parent done')"
    )
    episode = start(family, runner, timeout_s=2.0)
    started = time.monotonic()
    step = episode.step(code(source))
    assert time.monotonic() - started < 20.0
    assert step.info["run_status"] in ("ok", "error", "timeout", "killed")
    assert not step.terminated
    assert obs(episode.step(code("print('still alive')"))) == "\nCode execution result: still alive\n\n"


def test_code_cannot_find_the_gold(family: CodeMathFamily, runner: Runner) -> None:
    # The gold stays on the server: not in the program, the environment or the work dir.
    gold = "739104628153"
    rec = Recorder(runner)
    episode = start(family, rec, answer=gold, question="What number am I thinking of?")
    source = (
        "import os\n"
        "needle = str(739104628152 + 1)  # the program file must not contain the gold itself\n"
        "hits = [k for k, v in os.environ.items() if needle in v]\n"
        "for root, dirs, files in os.walk('.'):\n"
        "    for name in files:\n"
        "        try:\n"
        "            if needle in open(os.path.join(root, name), errors='ignore').read():\n"
        "                hits.append(name)\n"
        "        except OSError:\n"
        "            pass\n"
        "print('hits', len(hits))"
    )
    step = episode.step(code(source))
    assert obs(step) == "\nCode execution result: hits 0\n\n"
    assert all(gold not in r.code for r in rec.requests)


def test_reading_outside_the_work_dir_is_data(family: CodeMathFamily, runner: Runner) -> None:
    step = start(family, runner).step(code("print(open('/etc/hostname').read()[:0] + 'read ok')"))
    assert step.info["status"] == "ok"
    assert obs(step) in (
        "\nCode execution result: read ok\n\n",
        "\nCode execution result: FileNotFoundError: [Errno 2] No such file or directory: '/etc/hostname'\n",
        "\nCode execution result: PermissionError: [Errno 13] Permission denied: '/etc/hostname'\n",
    )


def test_sandbox_failure_leaves_the_episode_unchanged(family: CodeMathFamily, runner: Runner) -> None:
    calls = {"n": 0}

    def failing_once(request: RunRequest) -> RunResult:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SandboxError("the box died")
        return runner(request)

    episode = start(family, failing_once)
    with pytest.raises(SandboxError):
        episode.step(code("final_answer(42)"))
    assert episode.turn == 0
    step = episode.step(code("final_answer(42)"))  # the server's retry on a fresh sandbox
    assert step.reward == 1.0 and step.info["metrics"]["turns"] == 1.0


# --- the turn limit ------------------------------------------------------------------------


def test_turn_limit_truncates_and_final_newline_comes_before_the_last_turn(
    family: CodeMathFamily, runner: Runner
) -> None:
    episode = start(family, runner, split="train")  # max_turns 5 on train
    seen = [obs(episode.step(code(f"print({i})"))) for i in range(4)]
    # The normal observation ends with one "\n"; at step max_turns - 2 (the 4th) one more.
    assert seen == [f"\nCode execution result: {i}\n\n" for i in range(3)] + [
        "\nCode execution result: 3\n\n\n"
    ]
    step = episode.step(code("print(4)"))
    assert step.truncated and not step.terminated
    assert step.info["reason"] == "max_turns"
    assert step.reward == 0.0 and step.info["reward_components"] == {"correct": 0.0}
    assert obs(step) == "\nCode execution result: 4\n\n"


def test_empty_observation_gets_no_final_newline(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner, max_turns=2)
    assert obs(episode.step(code("x = 1"))) == ""


def test_last_turn_output_is_not_scored(family: CodeMathFamily, runner: Runner) -> None:
    # SimpleTIR appends an observation only for step < max_turns - 1: final_answer() on the
    # last turn runs, but its \boxed{} is not in the trajectory. (Boxed-only extraction: the
    # default, SimpleTIR's, would read the last number, the 42 in "final_answer(42)".)
    episode = start(family, runner, max_turns=2, answer_extraction="boxed")
    first = episode.step(code("print(6 * 7)"))
    assert first.info["observation_scored"] is True
    step = episode.step(code("final_answer(42)"))
    assert obs(step) == "\nCode execution result: \\boxed{42}\n\n"
    assert step.info["observation_scored"] is False
    assert step.terminated and step.info["reason"] == "answered"
    assert step.reward == 0.0 and step.info["verifier_status"] == "no_answer"


def test_answer_in_text_on_the_last_turn_is_scored(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner, max_turns=2)
    episode.step(code("print(6 * 7)"))
    step = episode.step("\\boxed{42}")
    assert step.terminated and step.reward == 1.0


def test_boxed_in_an_earlier_observation_counts_at_the_limit(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner, max_turns=2)
    step = episode.step(code("print('\\\\boxed{42} maybe')"))  # prints \boxed: the episode ends
    assert step.terminated and step.reward == 1.0


# --- a scripted policy solves every shipped family ------------------------------------------


def _solver(family_name: str, question: str, gold: str) -> str:
    """Code that computes the answer from the question (prints the gold for word problems)."""
    if family_name in ("gcd", "lcm"):
        numbers = re.search(r"numbers: (\d+(?:, \d+)*)", question)
        assert numbers is not None
        return f"import math\nprint(math.{family_name}({numbers.group(1)}))"
    if family_name == "count_bits":
        number = re.search(r"number (\d+)", question)
        assert number is not None
        return f"print(bin({number.group(1)}).count('1'))"
    if family_name == "count_primes":
        bounds = re.search(r"between (\d+) and (\d+)", question)
        assert bounds is not None
        lo, hi = bounds.groups()
        return (
            f"lo, hi = {lo}, {hi}\n"
            "sieve = bytearray([1]) * (hi + 1)\n"
            "sieve[0:2] = b'\\x00\\x00'\n"
            "for p in range(2, int(hi ** 0.5) + 1):\n"
            "    if sieve[p]:\n"
            "        sieve[p * p :: p] = bytearray(len(sieve[p * p :: p]))\n"
            "print(sum(sieve[lo:]))"
        )
    if family_name == "simple_equations":
        equation = question.rsplit(": ", 1)[1]
        variable = re.search(r"[a-z]", equation)
        assert variable is not None
        lhs, rhs = equation.split("=")
        name = variable.group()
        return (
            "from fractions import Fraction\n"
            f"f = lambda v: eval({lhs!r}, {{{name!r}: v}}) - eval({rhs!r}, {{{name!r}: v}})\n"
            "x = -f(Fraction(0)) / (f(Fraction(1)) - f(Fraction(0)))\n"
            "print(x.numerator if x.denominator == 1 else x)"
        )
    return f"print({gold!r})"


def play(episode: CodeMathEpisode, family_name: str, question: str, gold: str) -> float:
    """Turn 1 computes and prints; turn 2 boxes what was printed."""
    first = episode.step(code(_solver(family_name, question, gold)))
    assert first.info["run_status"] == "ok", obs(first)
    printed = obs(first).removeprefix("\nCode execution result: ").strip()
    second = episode.step(f"The result is \\boxed{{{printed}}}.")
    assert second.terminated
    return second.reward


def _records(family_name: str, count: int) -> list[dict[str, str]]:
    source = "reasoning_gym/" + family_name
    by_split: dict[str, list[dict[str, str]]] = {}
    for split, record in cm_tasks.builtin_records():
        if record["source"] == source:
            by_split.setdefault(split, []).append(record)
    return by_split["test"][:count] + by_split["validation"][:count] + by_split["train"][:count]


@pytest.mark.parametrize("family_name", cm_tasks.FAMILIES)
def test_scripted_policy_gets_reward_one_on_every_family(
    family: CodeMathFamily, runner: Runner, family_name: str
) -> None:
    for record in _records(family_name, 4):
        episode = start(family, runner, answer=record["answer"], question=record["question"])
        assert play(episode, family_name, record["question"], record["answer"]) == 1.0, record


@pytest.mark.parametrize("family_name", cm_tasks.FAMILIES)
def test_scripted_policy_with_final_answer(family: CodeMathFamily, runner: Runner, family_name: str) -> None:
    record = _records(family_name, 1)[0]
    source = _solver(family_name, record["question"], record["answer"])
    cut = source.rindex("print(")  # the solver's last line prints the result
    final = source[:cut] + "final_answer(" + source[cut + len("print(") :]
    episode = start(family, runner, answer=record["answer"], question=record["question"])
    step = episode.step(code(final))
    assert step.terminated and step.reward == 1.0, (record, obs(step))


def test_wrong_scripted_answer_scores_zero(family: CodeMathFamily, runner: Runner) -> None:
    episode = start(family, runner, answer="12", question="gcd of 24 and 36?")
    step = episode.step(code("import math\nfinal_answer(math.gcd(24, 36) + 1)"))
    assert step.terminated and step.reward == 0.0
