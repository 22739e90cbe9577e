"""The error tree: every error carries the facts it declares, on both sides of the wire."""

from __future__ import annotations

import pytest

from toolgym.errors import DuplicateTask, ToolGymError, TurnMismatch, error_from_wire, http_status


@pytest.mark.parametrize(
    ("error", "attributes"),
    [
        (TurnMismatch("ep-1", expected_turn=3, turn=2), {"episode_id": "ep-1", "expected_turn": 3, "turn": 2}),
        (DuplicateTask("toolgym/ToolUse-v0", "t-1"), {"env_id": "toolgym/ToolUse-v0", "task_id": "t-1"}),
    ],
)
def test_errors_set_the_attributes_they_declare(error: ToolGymError, attributes: dict[str, object]) -> None:
    """A server-side ``except TurnMismatch as e: e.episode_id`` must work as it does on the
    client, where ``error_from_wire`` sets every detail as an attribute."""
    assert {name: getattr(error, name, None) for name in attributes} == attributes
    assert error.details == attributes
    rebuilt = error_from_wire(http_status(error), error.to_wire())
    assert type(rebuilt) is type(error)
    assert {name: getattr(rebuilt, name, None) for name in attributes} == attributes
