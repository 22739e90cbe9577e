"""The step and judge routes' action intake.

The validated request model is converted by the one wire converter (``toolgym.actions``), with
the ``max_action_chars`` cap.
"""

from __future__ import annotations

from toolgym.actions import Action, action_chars, action_from_wire
from toolgym.errors import PayloadTooLarge
from toolgym.server.models import AssistantMessageIn
from toolgym.server.settings import Settings

__all__ = ["action_from_request"]


def action_from_request(raw: str | AssistantMessageIn, settings: Settings, what: str = "action") -> Action:
    """The env action for ``raw``; ``PayloadTooLarge`` (413) over ``max_action_chars``.

    The request model has already refused a bad shape (422); the conversion itself is
    ``action_from_wire``'s, the same as the clients' and the fork's.
    """
    wire = raw if isinstance(raw, str) else {
        "content": raw.content, "tool_calls": [c.model_dump() for c in raw.tool_calls],
    }
    action = action_from_wire(wire, what)
    size = action_chars(action)
    if size > settings.max_action_chars:
        raise PayloadTooLarge(
            f"{what} of {size} characters is over max_action_chars={settings.max_action_chars}",
            max_action_chars=settings.max_action_chars,
        )
    return action
