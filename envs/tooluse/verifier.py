"""FTRL's verification and rewards (docs/methods.md#ftrl), as pure functions.

Checked against the authors' code, bytedance/FTRL: ``answer_verify`` in
``Code/utils/utils.py`` and the four ``compute_solve_*`` functions in
``Code/verl/utils/reward_score/tool.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "RewardVariant",
    "answer_verify",
    "episode_metrics",
    "error_text",
    "format_result",
    "final_turn_reward",
    "normalize",
    "tool_turn_reward",
]

RewardVariant = Literal["solve_f1", "solve_precision", "solve_rate", "solve_pr"]

TAG_MARKERS = ("<tool_call>", "</tool_call>", "<tool_parsed_response>")


def normalize(text: str) -> str:
    """FTRL's normalization: lowercase, commas removed, stripped."""
    return text.lower().replace(",", "").strip()


def format_result(value: Any) -> str:
    """What the policy sees of a tool's return value (FTRL's ``call_function``).

    An exact dict or list as ``json.dumps(..., ensure_ascii=False)``, anything else as
    ``str()``. The sandbox agent applies the same rule where the tool runs; this is its
    server-side twin for code the generator checks itself.
    """
    if type(value) in (dict, list):
        return json.dumps(value, ensure_ascii=False)
    return value if isinstance(value, str) else str(value)


def error_text(name: str, error: object) -> str:
    """The tool message of a failed call, FTRL's wording (their spelling included)."""
    return f"an error occured when call {name}: {error}"


def answer_verify(output: Any, gold: str) -> bool:
    """Split ``gold`` on ``", "``; every normalized piece must be a substring of the normalized ``output``.

    A dict/list output is JSON-dumped first, as FTRL does.
    """
    if type(output) in (dict, list):
        output = json.dumps(output, ensure_ascii=False)
    elif not isinstance(output, str):
        output = str(output)
    predicted = normalize(output)
    return all(normalize(piece) in predicted for piece in gold.split(", "))


def tool_turn_reward(variant: RewardVariant, solved: int, calls: int) -> float:
    """Reward of a turn with ``calls`` >= 1 valid calls that solved ``solved`` golds."""
    if variant == "solve_f1":
        return 2 * solved / (calls + 1)
    if variant == "solve_precision":
        return solved / calls
    if variant == "solve_rate":
        return float(solved)
    if variant == "solve_pr":
        return solved * solved / calls
    raise ValueError(f"unknown reward variant {variant!r}")


def final_turn_reward(content: str, answer: str | None, unsolved_before: int) -> tuple[float, str]:
    """Reward of a turn without a valid call, and which rule gave it.

    First match wins: empty -> -0.5; leftover call tags -> -0.3; the gold answer in the content
    -> 1/(1+u); every gold already solved -> 0.5; else 0.
    """
    if not content:
        return -0.5, "empty_response"
    if any(marker in content for marker in TAG_MARKERS):
        return -0.3, "malformed_tool_call"
    if answer is not None and normalize(answer) in normalize(content):
        return 1.0 / (1 + unsolved_before), "answer_correct"
    if unsolved_before == 0:
        return 0.5, "all_solved"
    return 0.0, "no_credit"


def episode_metrics(solved: int, calls: int, golds: int) -> dict[str, float]:
    """FTRL's episode metrics: ``solve_precision``, ``solve_rate`` and ``solve_f1``.

    ``solve_precision`` = S/N (1 when N = 0), ``solve_rate`` = S/U, ``solve_f1`` = 2S/(N+U); a
    task without golds counts as fully solved.
    """
    return {
        "solve_precision": solved / calls if calls else 1.0,
        "solve_rate": solved / golds if golds else 1.0,
        "solve_f1": 2 * solved / (calls + golds) if (calls + golds) else 1.0,
    }


def count_golds(unsolved_set: Mapping[str, list[str]]) -> int:
    return sum(len(v) for v in unsolved_set.values())
