"""Every env family, called directly from Python, answers a malformed action with an
``invalid_action`` step (reward 0, no messages) and leaves the episode at its turn; an
OpenAI-style dict is converted by ``toolgym.actions`` as the server would. Built-in tasks,
real sandboxes (``runner``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from toolgym.envs import load_families
from toolgym.envs.base import Task
from toolgym.envs.runner import RunRequest, RunResult

FAMILIES = load_families(include_entry_points=False)


@pytest.mark.parametrize("env_id", sorted(FAMILIES))
def test_a_malformed_action_is_an_invalid_action_step(env_id: str, runner: Callable[[RunRequest], RunResult]) -> None:
    family = FAMILIES[env_id]
    _, record = next(iter(family.builtin_records()))
    task = Task(env_id=env_id, id=str(record["id"]), split="train", record=family.validate_record(record))
    episode = family.start(task, family.parse_options({}, "train"), runner if family.needs_sandbox else None,
                           random.Random(0))
    episode.reset()
    bad: list[Any] = [{"foo": "bar"}, {}, ["x"], 3, None]
    for action in bad:
        step = episode.step(action)
        assert step.info["status"] == "invalid_action", step.info
        assert "not a valid action" in step.info["message"], step.info
        assert (step.reward, step.terminated, step.truncated, step.observation.messages) == (0.0, False, False, [])
        assert episode.turn == 0
    step = episode.step({"role": "assistant", "content": "I do not know."})
    assert "not a valid action" not in step.info.get("message", "")
    assert episode.turn == 1
