"""Two env families that exist only for tests, loaded through the ``toolgym.envs`` entry-point
group like any third-party family (``test_family_plugin.py`` installs the entry points).

``tests/Reverse-v0``: write a word backwards; one step; reward 1 iff the answer is the
record's ``answer``. It declares every data-loop capability. Its ``variants`` propose ``n``
new words and, last, one *mislabeled* task (its ``answer`` is the word itself, not the word
backwards), which the data loop must reject because its gold does not grade as correct.

``tests/Plain-v0``: the same episodes and no capability, to see the 422s.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolgym.envs.base import (
    Action,
    AssistantMessage,
    EnvFamily,
    Episode,
    Expandable,
    Judgeable,
    JudgeView,
    Observation,
    Runner,
    Step,
    Task,
    make_info,
)
from toolgym.errors import ValidationFailed

WORDS = ("harbor", "meadow", "lantern", "pepper", "violin", "glacier", "saddle", "tunnel", "walnut")


@dataclass(frozen=True)
class NoOptions:
    """These envs take no reset options."""


def text_of(action: Action) -> str:
    """The answer's text: the string, or an assistant message's content."""
    return (action.content or "") if isinstance(action, AssistantMessage) else action


def question(record: Mapping[str, Any]) -> str:
    return f"Write the word {record['word']!r} backwards."


class ReverseEpisode(Episode):
    """One question, one answer."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._record = record
        self._turn = 0

    @property
    def turn(self) -> int:
        return self._turn

    def reset(self) -> tuple[Observation, dict[str, Any]]:
        return Observation(messages=[{"role": "user", "content": question(self._record)}]), make_info()

    def step(self, action: Action) -> Step:
        self._turn = 1
        reward = 1.0 if text_of(action).strip() == self._record["answer"] else 0.0
        info = make_info(reward_components={"correct": reward}, reason="answered")
        return Step(Observation(messages=[]), reward, True, False, info)


class PlainFamily(EnvFamily):
    """Reverse-a-word episodes, and nothing for the data loop."""

    env_id: ClassVar[str] = "tests/Plain-v0"
    description: ClassVar[str] = "Write a word backwards (a test env)."
    action_format: ClassVar[str] = "The word backwards, as text."
    observation_format: ClassVar[str] = "The question as a user message."
    reward_spec: ClassVar[str] = "1 iff the answer is the record's answer."
    record_format: ClassVar[str] = '{"word": str, "answer": str}'
    options_type: ClassVar[type] = NoOptions
    needs_sandbox: ClassVar[bool] = False

    def validate_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        for key in ("word", "answer"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise ValidationFailed(f"record field {key!r} must be a non-empty string", field=key)
        return {"word": record["word"], "answer": record["answer"]}

    def start(self, task: Task, options: Any, runner: Runner | None, rng: random.Random) -> Episode:
        return ReverseEpisode(task.record)


class ReverseFamily(PlainFamily, Judgeable, Expandable):
    """``PlainFamily`` with every data-loop capability."""

    env_id: ClassVar[str] = "tests/Reverse-v0"

    def gold_answer(self, record: Mapping[str, Any]) -> Action:
        return str(record["word"])[::-1]

    def grade(self, task: Task, action: Action) -> bool:
        return text_of(action).strip() == task.record["answer"]

    def judge_view(self, task: Task, response: Action) -> JudgeView:
        return JudgeView(messages=[{"role": "user", "content": question(task.record)}], tools=[],
                         label=str(task.record["answer"]), response=text_of(response))

    def variants(self, record: Mapping[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
        words = rng.sample([w for w in WORDS if w != record["word"]], n)
        out = [{"word": w, "answer": w[::-1]} for w in words[:-1]]
        return [*out, {"word": words[-1], "answer": words[-1]}]  # mislabeled: must be rejected
