"""Actions, in one place: their wire form and their parsing into content and tool calls.

Two action forms arrive: the raw assistant turn as a string, or an OpenAI-style assistant
message ``{"content", "tool_calls"}``. Every edge that takes an action (the HTTP routes, the
clients, ``RemoteEnv``, the episode store and fork) converts with ``action_from_wire`` and
``action_to_wire`` here, so a shape is valid or invalid the same way everywhere: anything else
(a dict that is not an assistant message, a list, a number) is refused with
``ValidationFailed`` naming what was wrong, never taken as an empty reply.

The string form follows FTRL's ``parse_qwen`` (bytedance/FTRL
``Code/utils/parse_output.py``), the Qwen/Hermes convention:

- a trailing ``<|endoftext|>`` / ``<|im_end|>`` is stripped first (FTRL's reward code);
- the text before the first ``<tool_call>`` is the content; every
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` block is JSON whose ``arguments``
  may itself be a JSON string; a block that does not parse, lacks a name or lacks arguments
  is skipped; if no block parses, the whole (stripped) text counts as content.

Calls get deterministic ids (``call_<turn>_<index>``) so two seeded runs are equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolgym.envs.base import Action, AssistantMessage
from toolgym.errors import ValidationFailed

__all__ = [
    "ACTION_SHAPE",
    "MESSAGE_KEYS",
    "ParsedCall",
    "ParsedTurn",
    "action_chars",
    "action_from_wire",
    "action_to_wire",
    "parse_action",
    "parse_tool_call_tags",
    "strip_end_tokens",
]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
END_TOKENS = ("<|endoftext|>", "<|im_end|>")


ACTION_SHAPE = "a string (the raw assistant turn) or an assistant message {content, tool_calls}"
"""How every refusal names the two valid shapes."""
MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "reasoning_content", "refusal"})
"""Keys an assistant message may carry; model servers send ``role``, ``reasoning_content`` and
``refusal`` besides the two that matter, so those are accepted and ignored."""


def _refuse(what: str, why: str) -> ValidationFailed:
    return ValidationFailed(f"{what} is not a valid action ({why}): send {ACTION_SHAPE}")


def action_from_wire(raw: object, what: str = "action") -> Action:
    """The env ``Action`` for a wire action, or ``ValidationFailed`` (HTTP 422) naming the fault.

    Accepts a string, an ``AssistantMessage``, or a mapping with ``content`` and/or
    ``tool_calls`` (plus the ignored ``role``/``reasoning_content``/``refusal``) whose
    ``tool_calls`` is a list of objects. Whether each call names a tool correctly is the env's
    business (an unparsable call is an ``invalid_action`` step); this only checks the shape, so
    that ``{"foo": "bar"}`` is an error rather than an empty reply.

    Args:
        raw: the action as sent (JSON-decoded) or as a Python caller passed it.
        what: how the error names it (``action``, ``response``).
    """
    if isinstance(raw, str | AssistantMessage):
        return raw
    if not isinstance(raw, Mapping):
        raise _refuse(what, f"got {type(raw).__name__}")
    keys = [str(k) for k in raw]
    unknown = sorted(k for k in keys if k not in MESSAGE_KEYS)
    if unknown:
        raise _refuse(what, f"unknown key(s) {unknown}")
    if "content" not in raw and "tool_calls" not in raw:
        raise _refuse(what, "an assistant message needs content or tool_calls")
    role = raw.get("role")
    if role not in (None, "assistant"):
        raise _refuse(what, f"role must be 'assistant', got {role!r}")
    content = raw.get("content")
    if content is not None and not isinstance(content, str):
        raise _refuse(what, f"content must be a string or null, got {type(content).__name__}")
    calls = raw.get("tool_calls")
    if calls is None:
        calls = ()
    if not isinstance(calls, list | tuple) or not all(isinstance(c, Mapping) for c in calls):
        raise _refuse(what, "tool_calls must be a list of objects")
    return AssistantMessage(content=content, tool_calls=tuple(dict(c) for c in calls))


def action_to_wire(action: Action) -> str | dict[str, Any]:
    """The JSON form of an env ``Action``: what a client sends and what a trajectory records
    (``action_from_wire`` reads it back, e.g. when a fork replays the recorded actions)."""
    if isinstance(action, AssistantMessage):
        return {"content": action.content, "tool_calls": [dict(c) for c in action.tool_calls]}
    if isinstance(action, str):
        return action
    raise _refuse("action", f"got {type(action).__name__}")


def action_chars(action: Action) -> int:
    """The size of an action in characters, as the ``max_action_chars`` cap counts it: the text,
    plus the JSON of the tool calls."""
    if isinstance(action, AssistantMessage):
        return len(action.content or "") + len(json.dumps([dict(c) for c in action.tool_calls], default=str))
    return len(action)


@dataclass(frozen=True)
class ParsedCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass(frozen=True)
class ParsedTurn:
    content: str
    calls: list[ParsedCall] = field(default_factory=list)
    skipped_calls: int = 0
    """``<tool_call>`` blocks (or structured calls) that were present but did not parse."""


def strip_end_tokens(text: str) -> str:
    """FTRL: ``strip().removesuffix('<|endoftext|>').strip().removesuffix('<|im_end|>').strip()``."""
    out = text.strip()
    for token in END_TOKENS:
        out = out.removesuffix(token).strip()
    return out


def _arguments(raw: Any) -> dict[str, Any] | None:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            return None
    return raw if isinstance(raw, dict) else None


def parse_tool_call_tags(text: str, turn: int = 0) -> ParsedTurn:
    """Parse a raw assistant turn the way FTRL's ``parse_qwen`` does (see module doc)."""
    start = text.find(TOOL_CALL_OPEN)
    if start == -1:
        return ParsedTurn(content=text.strip())
    content = text[:start].strip()
    calls: list[ParsedCall] = []
    skipped = 0
    for chunk in text[start:].split(TOOL_CALL_CLOSE):
        chunk = chunk.strip()
        if not chunk:
            continue
        if not chunk.startswith(TOOL_CALL_OPEN):
            continue  # trailing text after the last block: FTRL ignores it too
        body = chunk[len(TOOL_CALL_OPEN):].strip()
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            skipped += 1
            continue
        name = obj.get("name") if isinstance(obj, dict) else None
        if not isinstance(name, str) or not name or "arguments" not in obj:
            skipped += 1
            continue
        args = _arguments(obj["arguments"])
        if args is None:
            skipped += 1
            continue
        calls.append(ParsedCall(id=f"call_{turn}_{len(calls)}", name=obj["name"], arguments=args))
    if not calls:
        return ParsedTurn(content=text.strip(), skipped_calls=skipped)
    return ParsedTurn(content=content, calls=calls, skipped_calls=skipped)


def _parse_message(message: AssistantMessage, turn: int) -> ParsedTurn:
    calls: list[ParsedCall] = []
    skipped = 0
    for raw in message.tool_calls:
        fn = raw.get("function") if isinstance(raw, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        args = _arguments(fn.get("arguments", "{}")) if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not name or args is None:
            skipped += 1
            continue
        calls.append(ParsedCall(id=f"call_{turn}_{len(calls)}", name=name, arguments=args))
    content = (message.content or "").strip()
    if not calls and not message.tool_calls:
        # A structured message whose content carries tags is parsed like a raw turn.
        return parse_tool_call_tags(strip_end_tokens(content), turn)
    return ParsedTurn(content=content, calls=calls, skipped_calls=skipped)


def parse_action(action: Action, turn: int = 0) -> ParsedTurn:
    """Content and tool calls of one action, in either form."""
    if isinstance(action, AssistantMessage):
        return _parse_message(action, turn)
    return parse_tool_call_tags(strip_end_tokens(action), turn)
