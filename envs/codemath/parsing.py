r"""Reading a CodeMath turn and writing its observation, as SimpleTIR does (docs/methods.md#simpletir).

Everything here is pure string work, checked against the authors' code
(ltzheng/SimpleTIR ``recipe/simpletir/agent_utils.py``: ``_postprocess_responses``,
``execute_predictions``, ``truncate_content``):

- ``parse_turn``: the turn is cut after its first complete code block
  (``^(.*?)(```(?:py|python)?\n.*?\n```)``, DOTALL) and kept as the stripped preceding text
  glued to the stripped block, with *no separator* (their ``preceding_text + code_block``).
  ``\boxed{`` is looked for in the cut text, so an answer written after the first block is
  discarded with the rest of the turn, as in theirs.
- ``format_observation``: ``""`` when nothing was printed; ``"\nCode execution result: "
  + T(stdout) + "\n"``; when anything reached stderr, its last line replaces stdout.
- ``truncate_middle`` is their ``truncate_content(x, max_length=512)``.
- ``find_last_boxed``: the answer the reward reads (see ``verifier``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolgym.envs.base import Action, AssistantMessage
from toolgym.envs.runner import RunResult

__all__ = [
    "BOXED",
    "CODE_BLOCK_RE",
    "CUT_RE",
    "OBSERVATION_LIMIT",
    "ParsedTurn",
    "RenderedOutput",
    "find_last_boxed",
    "format_observation",
    "parse_turn",
    "truncate_middle",
    "turn_text",
]

BOXED = "\\boxed{"
CUT_RE = re.compile(r"^(.*?)(```(?:py|python)?\n.*?\n```)", re.DOTALL)
"""SimpleTIR's cut: the text before the first complete code block, and that block."""
CODE_BLOCK_RE = re.compile(r"```(?:py|python)?\n(.*?)\n```", re.DOTALL)
"""SimpleTIR's code pattern; its first match in the cut turn is the code that runs."""
OBSERVATION_LIMIT = 512
SPECIAL_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""SimpleTIR decodes turns with ``skip_special_tokens=True``, so these never reach its parser."""


@dataclass(frozen=True)
class ParsedTurn:
    r"""One assistant turn as SimpleTIR sees it.

    ``text`` is what enters the trajectory (and the reward), ``code`` what runs (None when the
    turn has no complete block), ``answered`` whether ``text`` contains ``\boxed{``.
    """

    text: str
    code: str | None
    answered: bool

    @property
    def void(self) -> bool:
        r"""Neither a code block nor ``\boxed{``: SimpleTIR's *void turn*."""
        return self.code is None and not self.answered


@dataclass(frozen=True)
class RenderedOutput:
    """What the interpreter shows the policy after one code run."""

    observation: str
    truncated: bool
    """T() shortened the shown text, or the sandbox dropped output past its byte cap."""
    valid: bool
    """Nothing reached stderr (SimpleTIR's ``valid_code``); a timeout or kill never is."""


def turn_text(action: Action) -> str:
    """The raw text of an action: the string, or an assistant message's ``content``.

    ``tool_calls`` of a structured message are ignored: this env has no tools, its one
    "tool" is the code block inside the text. Chat special tokens are removed wherever they
    are, as SimpleTIR's ``skip_special_tokens=True`` decoding does.
    """
    if isinstance(action, AssistantMessage):
        text = action.content or ""
    elif isinstance(action, str):
        text = action
    else:  # pragma: no cover - the server builds actions; anything else is a bug
        raise TypeError(f"a CodeMath action is a str or AssistantMessage, not {type(action).__name__}")
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "")
    return text


def parse_turn(action: Action) -> ParsedTurn:
    """Cut the turn after its first code block and find its code and answer (module doc)."""
    text = turn_text(action)
    cut = CUT_RE.search(text)
    if cut is not None:
        text = cut.group(1).strip() + cut.group(2).strip()
    block = CODE_BLOCK_RE.search(text)
    code = block.group(1).strip() if block is not None else None
    return ParsedTurn(text=text, code=code, answered=BOXED in text)


def truncate_middle(text: str, limit: int = OBSERVATION_LIMIT) -> tuple[str, bool]:
    """SimpleTIR's ``truncate_content``: keep ``text`` if it fits in ``limit`` characters.

    Otherwise keep its first and last ``limit // 2`` around a note. Returns
    ``(text, truncated)``.
    """
    if len(text) <= limit:
        return text, False
    half = limit // 2
    note = f"\n..._This content has been truncated to stay below {limit} characters_...\n"
    return text[:half] + note + text[-half:], True


TIMEOUT_STDERR = "Timeout\n"
"""What SimpleTIR's sandbox (``sandbox/sandbox_api.py``) returns on a run timeout: stdout
dropped, this on stderr, so the policy reads ``Code execution result: Timeout``."""
KILLED_STDERR = "Killed\n"
"""Our choice for a run ended by a signal with nothing on stderr (e.g. the OOM killer): a
failure the policy should see, not an empty or partial stdout."""


def format_observation(result: RunResult) -> RenderedOutput:
    """The observation string for one run (module doc), SimpleTIR's rule applied to the sandbox's result.

    A timeout shows as SimpleTIR's sandbox shows it.
    """
    stdout, stderr = result.stdout, result.stderr
    if result.status == "timeout":
        stdout, stderr = "", TIMEOUT_STDERR
    elif result.status == "killed" and not stderr:
        stderr = KILLED_STDERR
    observation = ""
    truncated = False
    if stdout:
        shown, truncated = truncate_middle(stdout)
        observation = f"\nCode execution result: {shown}\n"
        truncated = truncated or result.stdout_truncated
    if stderr:
        shown, truncated = truncate_middle("\n".join(stderr.splitlines()[-1:]))
        observation = f"\nCode execution result: {shown}\n"
        truncated = truncated or result.stderr_truncated
    valid = not stderr
    return RenderedOutput(observation=observation, truncated=truncated, valid=valid)


def find_last_boxed(text: str) -> str | None:
    r"""The content of the last *complete* ``\boxed{...}`` in ``text``, nested braces allowed.

    Braces are counted as characters (``\{`` counts too, as in SimpleTIR's Qwen extractor);
    a ``\boxed{`` that never closes (a turn cut at the length limit) is skipped in favour of
    the complete one before it. ``\boxed 5`` (no brace) is not an answer.
    """
    # One pass with a stack of open braces, so a flood of unclosed ``\\boxed{`` costs O(n).
    opened: list[int] = []
    best: tuple[int, int] | None = None
    for i, ch in enumerate(text):
        if ch == "{":
            opened.append(i)
        elif ch == "}" and opened:
            brace = opened.pop()
            start = brace + 1 - len(BOXED)
            if start >= 0 and text.startswith(BOXED, start) and (best is None or start > best[0]):
                best = (start, i)
    if best is None:
        return None
    return text[best[0] + len(BOXED) : best[1]]
