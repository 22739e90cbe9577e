"""FTRL's scoring semantics, as the generator must satisfy them (docs/methods.md#ftrl).

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

from collections.abc import Iterable, Mapping, Sequence

# One source for FTRL's rules: the verifier beside the ToolUse env, which generated tasks
# must satisfy exactly.
from toolgym.envs.tooluse.verifier import answer_verify, error_text, format_result, normalize

__all__ = ["answer_verify", "error_text", "format_result", "normalize", "solve_greedily"]


def solve_greedily(unsolved_set: Mapping[str, Sequence[str]],
                   calls: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Run FTRL's bookkeeping over ``(tool name, output)`` pairs in call order.

    Returns the golds left unsolved per tool (an empty list everywhere means everything was
    solved).
    """
    left = {name: list(golds) for name, golds in unsolved_set.items()}
    for name, output in calls:
        golds = left.get(name, [])
        for gold in golds:
            if answer_verify(output, gold):
                golds.remove(gold)
                break
    return left
