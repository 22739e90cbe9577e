"""LoopTool's reward rule: the predicted calls match the gold calls, or no call for a text gold.

This is the rule of ``compare_parsed_content`` (``dataloop/filter_grpo_sample.py``) together
with the length check its GRPO reward puts in front of it
(``grpotool/verl/utils/reward_score/toolace.py``, ``compute_tool_call_reward_json``). Each call
``{"name": ..., "arguments": {...}}`` is made hashable recursively: a dict becomes the
frozenset of its ``(key, value)`` pairs, a list the frozenset of its items, anything else stays
itself. Their code then builds a ``Counter`` over the frozenset of the calls, which counts each
*distinct* call once, so the rule is:

    match  <=>  len(predicted) == len(gold)  and  set(predicted) == set(gold)

It is **not** a strict multiset comparison. Consequences, all intended as theirs:

- call order and key order do not matter;
- duplicate calls are only counted by the length check: ``[A, B, B]`` matches ``[A, A, B]``,
  ``[A, A]`` does not match ``[A, B]``;
- list values are compared as sets, duplicates and length included: ``[1, 2, 2]`` matches
  ``[2, 1]``; a nested dict is compared by its pairs, recursively;
- values compare with Python's ``==``: ``1``, ``1.0`` and ``True`` are equal, as are ``0`` and
  ``False``; ``"1"`` is not ``1``; strings are compared exactly (case and spaces count);
- an empty list and an empty dict are equal (both become an empty frozenset);
- an omitted optional argument differs from one given with its default value, and an extra
  argument makes the call differ: only the literal content counts, never the schema.

A text gold (``gold_text``) is matched by a response with no tool call. LoopTool's test is the
substring ``<tool_call>`` or ``</tool_call>`` in the response; we also count a parsed Python
call list or OpenAI ``tool_calls`` as a call, since the env accepts those forms.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

__all__ = ["hashable", "looptool_calls_match", "looptool_text_match"]


def hashable(data: Any) -> Hashable:
    """LoopTool's ``convert_to_hashable``: dict -> frozenset of pairs, list -> frozenset."""
    if isinstance(data, dict):
        return frozenset((key, hashable(value)) for key, value in data.items())
    if isinstance(data, list):
        return frozenset(hashable(item) for item in data)
    return data  # type: ignore[no-any-return]


def _call_key(call: Mapping[str, Any]) -> Hashable:
    return hashable({"name": call["name"], "arguments": call["arguments"]})


def looptool_calls_match(predicted: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]]) -> bool:
    """Same number of calls and the same set of calls (see the module doc)."""
    if len(predicted) != len(gold):
        return False
    return {_call_key(c) for c in predicted} == {_call_key(c) for c in gold}


def looptool_text_match(makes_call: bool) -> bool:
    """A text gold is matched by a response that makes no tool call."""
    return not makes_call
