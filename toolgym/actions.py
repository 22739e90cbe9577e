"""Actions, in one place: the env ``Action`` type and its wire form.

Two action forms exist: the raw assistant turn as a string, or an OpenAI-style assistant
message ``{"content", "tool_calls"}``. Every edge that takes an action (the HTTP routes, the
clients, ``RemoteEnv``, the episode record and fork) converts with ``action_from_wire`` and
``action_to_wire`` here, so a shape is valid or invalid the same way everywhere: anything else
(a dict that is not an assistant message, a list, a number) is refused with
``ValidationFailed`` naming what was wrong, never taken as an empty reply. The module sits at
the package root, beside ``toolgym.errors``, because the client needs it without the env
families and the env families without the client. Parsing an action's content into tool calls
is the env families' business (``toolgym.envs.actions``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolgym.errors import ValidationFailed

__all__ = [
    "ACTION_SHAPE",
    "MESSAGE_KEYS",
    "Action",
    "AssistantMessage",
    "action_chars",
    "action_from_wire",
    "action_to_wire",
    "message_from_wire",
]


@dataclass(frozen=True)
class AssistantMessage:
    """An OpenAI-style assistant message: ``content`` plus ``tool_calls``.

    Each tool call is in the ``{"id", "type": "function", "function": {"name", "arguments"}}``
    form.
    """

    content: str | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()


Action = str | AssistantMessage
"""What a policy sends: the raw assistant turn, or a structured assistant message."""

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
    return message_from_wire(raw, what)


def message_from_wire(raw: object, what: str = "action") -> AssistantMessage:
    """``action_from_wire`` for a caller that holds a message, not a raw string: the same checks.

    Code that makes an assistant message from parts (an adapter turning a trainer's tool call into
    a step) builds the wire mapping and converts it here, so its shape is checked as any sent one.
    """
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
    """The JSON form of an env ``Action``: what a client sends and what a trajectory records.

    ``action_from_wire`` reads it back, e.g. when a fork replays the recorded actions.
    """
    if isinstance(action, AssistantMessage):
        return {"content": action.content, "tool_calls": [dict(c) for c in action.tool_calls]}
    if isinstance(action, str):
        return action
    raise _refuse("action", f"got {type(action).__name__}")


def action_chars(action: Action) -> int:
    """The size of an action in characters, as the ``max_action_chars`` cap counts it.

    That is the text, plus the JSON of the tool calls.
    """
    if isinstance(action, AssistantMessage):
        return len(action.content or "") + len(json.dumps([dict(c) for c in action.tool_calls], default=str))
    return len(action)
