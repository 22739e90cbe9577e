"""New tasks from old ones by substituting a value in the query and the gold together.

LoopTool's Error-Driven Data Expansion asks an LLM for similar samples around a failed one.
Without an LLM we can still make honest variants: find a value that the user's message states
once, verbatim, and that the gold calls use as an argument; replace it in both places by
another value of the same kind. The new gold is then exactly as right as the old one.

What may be substituted (a *slot*):

- a value the record declares in ``slots`` (``{"value": "Paris", "alternatives": ["Lima",
  ...]}``): the author vouches that the alternatives are of the same kind;
- a string argument whose schema has an ``enum``: the other members (case follows the query);
- an integer argument of 2 or more whose schema gives ``minimum`` and ``maximum``: another
  integer in range, 2 or more (a plural noun stays plural).

A free-text value (a city, a name) is never guessed. A slot is used only if it is safe:

- its text occurs exactly once in all messages, as a whole token, in the last user message;
- it occurs in the gold at least once, and no gold string merely *contains* it ("Paris,
  France" blocks "Paris": replacing one and not the other would break the pair);
- the alternative does not already occur in the messages (no "Berlin and Berlin").

Every variant is validated like a registered record. Records with a ``gold_ast`` (BFCL's
allowed-value lists, which may hold other spellings of the value) and text-gold records get no
variants; fewer than ``n`` come back when the record allows fewer.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolgym.envs.functioncall.records import validate_record
from toolgym.errors import ValidationFailed

__all__ = ["Slot", "find_slots", "make_variants"]


@dataclass(frozen=True)
class Slot:
    """A value that may be replaced by one of ``choices`` in the query and the gold."""

    value: str | int
    choices: Sequence[str | int]
    case_insensitive: bool = False


def _token_pattern(surface: str, case_insensitive: bool) -> re.Pattern[str]:
    first, last = re.escape(surface[0]), re.escape(surface[-1])
    left = rf"(?<![\w.{first}])" if surface[0].isdigit() else rf"(?<![\w{first}])"
    right = rf"(?![\w{last}]|\.\d)"
    return re.compile(left + re.escape(surface) + right, re.IGNORECASE if case_insensitive else 0)


def _scalars(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _scalars(v)]
    if isinstance(value, list):
        return [s for v in value for s in _scalars(v)]
    return [value]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _replace(value: Any, old: Any, new: Any) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return new if _same(value, old) else value


def _last_user(messages: Sequence[Mapping[str, Any]]) -> int:
    return max(i for i, m in enumerate(messages) if m["role"] == "user")


def _auto_slots(record: Mapping[str, Any]) -> list[Slot]:
    properties = {t["function"]["name"]: t["function"]["parameters"]["properties"] for t in record["tools"]}
    slots: list[Slot] = []
    for call in record["gold_calls"]:
        for param, value in call["arguments"].items():
            schema = properties[call["name"]].get(param, {})
            enum = schema.get("enum")
            if isinstance(value, str) and isinstance(enum, list):
                others = [e for e in enum if isinstance(e, str) and e and e != value]
                if others:
                    slots.append(Slot(value, others, case_insensitive=True))
            elif type(value) is int and value >= 2 and schema.get("type") == "integer":
                # From 2 up, so "3 guests" never becomes "1 guests".
                lo, hi = schema.get("minimum"), schema.get("maximum")
                if type(lo) is int and type(hi) is int and hi > max(lo, 2):
                    slots.append(Slot(value, range(max(lo, 2), hi + 1)))
    return slots


def _safe(slot: Slot, record: Mapping[str, Any]) -> bool:
    surface = str(slot.value)
    pattern = _token_pattern(surface, slot.case_insensitive)
    messages = record["messages"]
    counts = [len(pattern.findall(m["content"])) for m in messages]
    if sum(counts) != 1 or counts[_last_user(messages)] != 1:
        return False
    gold = _scalars([c["arguments"] for c in record["gold_calls"]])
    if not any(_same(v, slot.value) for v in gold):
        return False
    return not any(isinstance(v, str) and not _same(v, slot.value) and pattern.search(v) for v in gold)


def find_slots(record: Mapping[str, Any]) -> list[Slot]:
    """The safe slots of a validated record (module doc), declared ones first."""
    if record.get("gold_text") or record.get("gold_ast") is not None:
        return []
    declared = [Slot(s["value"], list(s["alternatives"])) for s in record.get("slots") or []]
    out: list[Slot] = []
    seen: set[tuple[str, Any]] = set()
    for slot in [*declared, *_auto_slots(record)]:
        key = (type(slot.value).__name__, slot.value)
        if key not in seen and _safe(slot, record):
            seen.add(key)
            out.append(slot)
    return out


def _match_case(template: str, text: str) -> str:
    if template.isupper() and not template.islower():
        return text.upper()
    if template[:1].isupper():
        return text[:1].upper() + text[1:]
    return text


def _substitute(record: dict[str, Any], slot: Slot, new: str | int) -> bool:
    """Replace ``slot.value`` by ``new`` in ``record`` in place; False if ``new`` is unsafe."""
    messages = record["messages"]
    if any(_token_pattern(str(new), slot.case_insensitive).search(m["content"]) for m in messages):
        return False
    index = _last_user(messages)
    pattern = _token_pattern(str(slot.value), slot.case_insensitive)
    messages[index]["content"] = pattern.sub(
        lambda m: _match_case(m.group(0), str(new)) if slot.case_insensitive else str(new),
        messages[index]["content"],
        count=1,
    )
    record["gold_calls"] = [
        {"name": c["name"], "arguments": _replace(c["arguments"], slot.value, new)}
        for c in record["gold_calls"]
    ]
    return True


def _moved(declared: dict[str, Any], applied: Sequence[tuple[Slot, str | int]]) -> dict[str, Any]:
    """A declared slot after substitution: its new value, the old one now an alternative."""
    for slot, new in applied:
        if _same(declared["value"], slot.value):
            others = [a for a in declared["alternatives"] if not _same(a, new)]
            return {"value": new, "alternatives": [declared["value"], *others]}
    return declared


def make_variants(record: Mapping[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Up to ``n`` distinct, validated variants of ``record`` (raw or validated form)."""
    if n <= 0:
        return []
    base = validate_record(record)
    slots = find_slots(base)
    if not slots:
        return []
    source_id = record.get("id")
    seen = {json.dumps([base["messages"], base["gold_calls"]], sort_keys=True)}
    out: list[dict[str, Any]] = []
    for _ in range(20 * n):
        if len(out) >= n:
            break
        chosen = [s for s in slots if rng.random() < 0.5] or [rng.choice(slots)]
        variant = copy.deepcopy(base)
        applied: list[tuple[Slot, str | int]] = []
        ok = True
        for slot in chosen:
            new = rng.choice(slot.choices)
            if _same(new, slot.value) or not _substitute(variant, slot, new):
                ok = False
                break
            applied.append((slot, new))
        if not ok:
            continue
        key = json.dumps([variant["messages"], variant["gold_calls"]], sort_keys=True)
        if key in seen:
            continue
        if "slots" in variant:  # a declared slot now holds its new value; the old one is a choice
            variant["slots"] = [_moved(s, applied) for s in variant["slots"]]
        try:
            checked = validate_record(variant)
        except ValidationFailed:
            continue
        seen.add(key)
        metadata = dict(checked.get("metadata") or {})
        if source_id is not None:
            metadata["variant_of"] = source_id
            checked["id"] = f"{source_id}~v{len(out) + 1}"
        checked["metadata"] = metadata
        out.append(checked)
    return out
