"""FTRL's scoring semantics, as the generator must satisfy them (PAPERS.md §1).

Checked against the authors' code (bytedance/FTRL ``Code/utils/utils.py``: ``answer_verify``,
``call_function``; ``Code/verl/utils/reward_score/tool.py``): re-implemented here, not copied.

- A call's result reaches the policy as ``json.dumps(value, ensure_ascii=False)`` for a dict
  or list and ``str(value)`` otherwise; a raised error as
  ``an error occured when call {name}: {error}`` (their spelling).
- ``answer_verify(output, gold)``: split the gold on ``", "``, lower-case each piece and drop
  its commas; every piece must be a substring of the lower-cased, comma-free output.
- ``unsolved_set`` maps a tool name to gold answers; each call to tool T removes the *first*
  still-unsolved gold of T that its output verifies (at most one per call).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["answer_verify", "error_text", "format_result", "normalize", "solve_greedily"]


def normalize(text: str) -> str:
    """Lower-case and remove commas: how FTRL compares answers and outputs."""
    return text.lower().replace(",", "").strip()


def format_result(value: Any) -> str:
    """What the policy sees of a tool's return value."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def error_text(name: str, error: object) -> str:
    """What the policy sees when a call raised (FTRL's wording, typo included)."""
    return f"an error occured when call {name}: {error}"


def answer_verify(output: str, gold: str) -> bool:
    """True when every ``", "``-separated piece of ``gold`` occurs in ``output``."""
    haystack = normalize(output)
    return all(normalize(piece) in haystack for piece in gold.split(", "))


def solve_greedily(unsolved_set: Mapping[str, Sequence[str]],
                   calls: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Run FTRL's bookkeeping over ``(tool name, output)`` pairs in call order; returns the
    golds left unsolved per tool (an empty list everywhere means everything was solved)."""
    left = {name: list(golds) for name, golds in unsolved_set.items()}
    for name, output in calls:
        golds = left.get(name, [])
        for gold in golds:
            if answer_verify(output, gold):
                golds.remove(gold)
                break
    return left
