"""CodeMath turn parsing, observation format and boxed extraction: pure string rules of
SimpleTIR (docs/methods.md#simpletir; ltzheng/SimpleTIR recipe/simpletir/agent_utils.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from toolgym.envs.base import AssistantMessage
from toolgym.envs.codemath.parsing import (
    find_last_boxed,
    format_observation,
    parse_turn,
    truncate_middle,
)
from toolgym.envs.codemath.program import FINAL_ANSWER_PRELUDE, build_program, run_timeout_s
from toolgym.envs.runner import RunResult

NOTE = "\n..._This content has been truncated to stay below 512 characters_...\n"


# --- the cut after the first code block (docs/methods.md#simpletir, first bullet) --------------------------


def test_turn_is_cut_after_first_code_block_and_glued_without_separator() -> None:
    turn = parse_turn("Let me compute.\n\n```python\nprint(1)\n```\nThe result follows. \\boxed{2}")
    # SimpleTIR: preceding_text.strip() + code_block.strip(), nothing in between.
    assert turn.text == "Let me compute.```python\nprint(1)\n```"
    assert turn.code == "print(1)"
    assert not turn.answered  # the \boxed{} after the block was cut away with the rest


def test_only_the_first_of_several_code_blocks_runs() -> None:
    turn = parse_turn("a\n```python\nx = 1\nprint(x)\n```\nb\n```python\nprint(2)\n```\n")
    assert turn.code == "x = 1\nprint(x)"
    assert "print(2)" not in turn.text


@pytest.mark.parametrize("fence", ["```", "```py", "```python"])
def test_fence_languages(fence: str) -> None:
    assert parse_turn(f"{fence}\nprint(3)\n```").code == "print(3)"


@pytest.mark.parametrize(
    "text",
    [
        "```python print(1)```",  # no newline after the fence
        "```python\nprint(1)```",  # no newline before the closing fence
        "```js\nconsole.log(1)\n```",  # another language
        "```python\nprint(1)\n",  # never closed
    ],
)
def test_incomplete_or_foreign_blocks_are_not_code(text: str) -> None:
    turn = parse_turn(text)
    assert turn.code is None
    assert turn.text == text  # nothing to cut
    assert turn.void


def test_code_is_stripped() -> None:
    assert parse_turn("```python\n\n   x = 1\nprint(x)  \n\n```").code == "x = 1\nprint(x)"


def test_boxed_before_the_block_answers_and_the_block_still_runs() -> None:
    turn = parse_turn("So \\boxed{4}.\n```python\nprint(4)\n```")
    assert turn.answered and turn.code == "print(4)" and not turn.void


def test_boxed_inside_the_code_source_counts_as_answered() -> None:
    # SimpleTIR looks for "\boxed{" anywhere in the cut turn, code included.
    turn = parse_turn('```python\nprint(f"\\\\boxed{{{7}}}")\n```')
    assert turn.answered


def test_void_turn_has_neither_code_nor_boxed() -> None:
    assert parse_turn("I think the answer is 5.").void
    assert not parse_turn("\\boxed{5}").void
    assert not parse_turn("\\boxed 5").answered  # no brace, no answer
    assert parse_turn("").void


def test_assistant_message_content_is_the_turn_and_tool_calls_are_ignored() -> None:
    msg = AssistantMessage(content="```python\nprint(1)\n```", tool_calls=({"id": "x"},))
    assert parse_turn(msg).code == "print(1)"
    assert parse_turn(AssistantMessage(content=None)).void


def test_chat_special_tokens_are_dropped_like_skip_special_tokens() -> None:
    assert parse_turn("\\boxed{3}<|im_end|>").text == "\\boxed{3}"
    assert parse_turn("```python\nprint(1)\n```<|endoftext|>").code == "print(1)"


# --- T(): middle truncation at 512 characters ---------------------------------------------


def test_truncate_keeps_short_text() -> None:
    assert truncate_middle("x" * 512) == ("x" * 512, False)


def test_truncate_keeps_first_and_last_256() -> None:
    text = "a" * 300 + "b" * 300
    out, cut = truncate_middle(text)
    assert cut
    assert out == "a" * 256 + NOTE + "b" * 256
    assert len(out) == 512 + len(NOTE)


# --- the observation string ----------------------------------------------------------------


def test_observation_empty_when_nothing_printed() -> None:
    rendered = format_observation(RunResult(status="ok"))
    assert rendered.observation == "" and rendered.valid and not rendered.truncated


def test_observation_of_stdout() -> None:
    rendered = format_observation(RunResult(status="ok", stdout="42\n"))
    assert rendered.observation == "\nCode execution result: 42\n\n"


def test_stderr_replaces_stdout_with_its_last_line() -> None:
    result = RunResult(
        status="error",
        stdout="\\boxed{1}\n",
        stderr='Traceback (most recent call last):\n  File "x", line 1\n'
        "ZeroDivisionError: division by zero\n",
    )
    rendered = format_observation(result)
    assert rendered.observation == "\nCode execution result: ZeroDivisionError: division by zero\n"
    assert not rendered.valid


def test_warnings_on_stderr_also_hide_stdout() -> None:
    # SimpleTIR's rule is "anything on stderr", even with exit status 0.
    rendered = format_observation(RunResult(status="ok", stdout="5\n", stderr="DeprecationWarning: x\n"))
    assert rendered.observation == "\nCode execution result: DeprecationWarning: x\n"


def test_long_stdout_is_middle_truncated_and_flagged() -> None:
    stdout = "".join(f"{i}\n" for i in range(1000))
    rendered = format_observation(RunResult(status="ok", stdout=stdout))
    assert rendered.truncated
    assert rendered.observation == "\nCode execution result: " + stdout[:256] + NOTE + stdout[-256:] + "\n"


def test_sandbox_byte_cap_sets_the_truncation_flag() -> None:
    rendered = format_observation(RunResult(status="ok", stdout="x\n", stdout_truncated=True))
    assert rendered.truncated


def test_long_last_stderr_line_is_truncated() -> None:
    rendered = format_observation(RunResult(status="error", stderr="E: " + "y" * 1000))
    assert rendered.truncated and NOTE in rendered.observation


def test_timeout_shows_what_simpletir_sandbox_shows() -> None:
    # SimpleTIR sandbox/sandbox_api.py: on timeout stdout is dropped and stderr is "Timeout\n".
    rendered = format_observation(RunResult(status="timeout", stdout="partial \\boxed{1}\n"))
    assert rendered.observation == "\nCode execution result: Timeout\n"
    assert not rendered.valid


def test_killed_without_stderr_says_killed() -> None:
    rendered = format_observation(RunResult(status="killed", stdout="half"))
    assert rendered.observation == "\nCode execution result: Killed\n"


# --- the answer: last complete \boxed{...} ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{5}", "5"),
        ("a \\boxed{1} b \\boxed{2} c", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{\\left\\{3\\right\\}}}", "\\frac{\\sqrt{2}}{\\left\\{3\\right\\}}"),
        ("\\boxed{\\boxed{7}}", "7"),
        ("\\boxed{1} then \\boxed{2", "1"),  # the unclosed one is skipped
        ("{{{ \\boxed{3} }}}}", "3"),
        ("\\boxed{}", ""),
        ("no answer", None),
        ("\\boxed 5", None),
        ("\\boxed{", None),
    ],
)
def test_find_last_boxed(text: str, expected: str | None) -> None:
    assert find_last_boxed(text) == expected


def test_find_last_boxed_is_linear_on_a_flood_of_unclosed_boxes() -> None:
    text = "\\boxed{1}" + "\\boxed{" * 200_000
    start = time.monotonic()
    assert find_last_boxed(text) == "1"
    assert time.monotonic() - start < 2.0


# --- the program that runs ----------------------------------------------------------------


def test_prelude_is_simpletir_final_answer() -> None:
    assert FINAL_ANSWER_PRELUDE == '\ndef final_answer(result):\n    print(f"\\\\boxed{{{result}}}")\n\n'
    out = subprocess.run(
        [sys.executable, "-c", build_program("final_answer('1/2')")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "\\boxed{1/2}\n"


def test_stateless_program_is_prelude_plus_code() -> None:
    assert build_program("print(1)") == FINAL_ANSWER_PRELUDE + "print(1)"


def test_stateful_program_replays_history_silently() -> None:
    history = [
        'import os\nx = 41\nprint("noise")\nos.write(1, b"fd noise\\n")',
        'raise ValueError("{not a format field}")',
        'import sys\ny = "{a}"\nprint("err", file=sys.stderr)',
    ]
    program = build_program("print(x + 1)\nfinal_answer(y)", history)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert out.stdout == "42\n\\boxed{{a}}\n"
    assert out.stderr == ""


def test_run_timeout_grows_with_replayed_history() -> None:
    assert run_timeout_s(3.0) == 3.0
    assert run_timeout_s(3.0, ["a", "b"]) == 9.0
