"""Turning a wire action (a string or an assistant message) into an env ``Action``, with the
``max_action_chars`` cap: shared by the step and judge routes."""

from __future__ import annotations

import json

from toolgym.envs.base import Action, AssistantMessage
from toolgym.errors import PayloadTooLarge
from toolgym.server.models import AssistantMessageIn
from toolgym.server.settings import Settings

__all__ = ["action_from_request"]


def action_from_request(raw: str | AssistantMessageIn, settings: Settings, what: str = "action") -> Action:
    """The env action for ``raw``; ``PayloadTooLarge`` (413) over ``max_action_chars``."""
    if isinstance(raw, str):
        size = len(raw)
        action: Action = raw
    else:
        calls = tuple(c.model_dump() for c in raw.tool_calls)
        action = AssistantMessage(content=raw.content, tool_calls=calls)
        size = len(raw.content or "") + len(json.dumps(calls))
    if size > settings.max_action_chars:
        raise PayloadTooLarge(
            f"{what} of {size} characters is over max_action_chars={settings.max_action_chars}",
            max_action_chars=settings.max_action_chars,
        )
    return action
