"""Turning a policy's action into content and tool calls: one parser for every env family.

Two action forms arrive (``toolgym.actions`` converts them from the wire): the raw assistant
turn as a string, or an OpenAI-style assistant message. The string form follows FTRL's
``parse_qwen`` (bytedance/FTRL ``Code/utils/parse_output.py``), the Qwen/Hermes convention:

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

__all__ = ["ParsedCall", "ParsedTurn", "parse_action", "parse_tool_call_tags", "strip_end_tokens"]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
END_TOKENS = ("<|endoftext|>", "<|im_end|>")


@dataclass(frozen=True)
class ParsedCall:
    """One tool call the policy made, with its arguments already decoded to a dict.

    ``id`` is the deterministic ``call_<turn>_<index>``, not the id the policy sent, so that
    two seeded runs record the same ids.
    """

    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's ``tool_calls`` form, ``arguments`` re-encoded as a JSON string."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass(frozen=True)
class ParsedTurn:
    """What one action said: its content and the tool calls that parsed.

    ``calls`` may be empty while ``skipped_calls`` is not: the policy tried to call a tool and
    got the format wrong, which the families treat differently from a plain answer.
    """

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
