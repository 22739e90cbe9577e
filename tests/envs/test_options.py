"""Reset options, checked by their type hints (``toolgym.envs.base.options_from_mapping``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from toolgym.envs.base import options_from_mapping
from toolgym.errors import ValidationFailed


@dataclass(frozen=True)
class _Options:
    limit: int | Literal["auto"] = field(default="auto", metadata={"doc": "a count, or auto"})
    budget: float | None = None


def test_a_union_accepts_any_of_its_arms() -> None:
    assert options_from_mapping(_Options, {"limit": 3}).limit == 3
    assert options_from_mapping(_Options, {"limit": "auto"}).limit == "auto"
    assert options_from_mapping(_Options, {"budget": None}).budget is None
    assert options_from_mapping(_Options, {"budget": 2}).budget == 2.0


def test_a_union_mismatch_names_why_each_arm_failed() -> None:
    with pytest.raises(ValidationFailed) as caught:
        options_from_mapping(_Options, {"limit": "many"})
    message = caught.value.message
    assert "'limit'" in message and "'many'" in message
    assert "must be an integer" in message and "must be one of ['auto']" in message
    assert caught.value.details["option"] == "limit"
    with pytest.raises(ValidationFailed, match="must be a number"):
        options_from_mapping(_Options, {"budget": "lots"})
