"""The policies that need no model: what one sees of an episode, and the ceiling and the floor.

A policy is any object with a ``name`` and ``async act(conversation) -> assistant message``
(an OpenAI assistant message: ``content`` and ``tool_calls``). ``ReferencePolicy`` replays a
task's reference solution and then answers with its gold (the ceiling row of the table);
``RandomPolicy`` calls random tools with random arguments or answers nonsense (the floor).
The model policy, which talks to an endpoint, is ``toolgym.eval.model.ModelPolicy``.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from toolgym.eval.tasks import EvalTask

__all__ = ["Conversation", "Policy", "RandomPolicy", "ReferencePolicy", "assistant_message", "tool_call"]


@dataclass
class Conversation:
    """What a policy sees of one episode: the chat so far, the tools, and the turn.

    The chat is the system and user messages, then assistant and tool messages, with tool-call
    ids as the server numbers them.
    """

    task: EvalTask
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    turn: int
    rng: random.Random


class Policy(Protocol):
    """What ``evaluate`` plays episodes with; ``name`` labels the trajectories file."""

    name: str

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        """The next assistant message: ``{"role": "assistant", "content", "tool_calls"}``."""
        ...


def tool_call(name: str, arguments: Mapping[str, Any], index: int) -> dict[str, Any]:
    """An OpenAI tool call (``call_<index>``; the server renumbers ids in the history)."""
    return {"id": f"call_{index}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def assistant_message(content: str | None = None, tool_calls: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """An OpenAI assistant message: the action a policy returns."""
    return {"role": "assistant", "content": content, "tool_calls": list(tool_calls)}


class ReferencePolicy:
    """Replays ``reference_solution``, then answers with the gold ``answer``; both from the task's file record.

    ``reference_solution`` is a list of turns, each a list of ``{name, arguments}``.
    """

    name = "reference"

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        """This turn's reference calls, or the gold answer once they are played.

        Raises ``ValueError`` for a task without its record.
        """
        record = conversation.task.record
        if record is None:
            raise ValueError(f"task {conversation.task.id!r}: the reference policy needs its record (--tasks)")
        turns = record.get("reference_solution") or []
        if conversation.turn < len(turns):
            calls = turns[conversation.turn]
            return assistant_message("", [tool_call(c["name"], c.get("arguments") or {}, i)
                                          for i, c in enumerate(calls)])
        return assistant_message(str(record.get("answer", "")))

    @staticmethod
    def missing(tasks: Iterable[EvalTask]) -> list[str]:
        """Ids of tasks this policy cannot play (no record, or no reference_solution/answer)."""
        return [t.id for t in tasks if t.record is None or "reference_solution" not in t.record
                or "answer" not in t.record]


def _nonsense(rng: random.Random) -> str:
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(rng.randint(1, 5))]
    return " ".join(words)


def _random_value(schema: Mapping[str, Any], rng: random.Random, depth: int = 0) -> Any:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind) if kind else None
    if kind == "integer":
        return rng.randint(-10, 10_000)
    if kind == "number":
        return round(rng.uniform(-100, 10_000), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        items = schema.get("items")
        items = items if isinstance(items, Mapping) else {}
        return [_random_value(items, rng, depth + 1) for _ in range(rng.randint(1, 2))] if depth < 3 else []
    if kind == "object":
        return {}
    return _nonsense(rng)


class RandomPolicy:
    """Random turns, the floor of the table: nonsense answers and random calls.

    Each turn: answer nonsense with probability ``p_answer`` (ending the episode), else call 1 to
    ``max_calls`` random tools of the task, each argument random or left out. Seeded by the
    conversation's ``rng`` (one per task).
    """

    name = "random"

    def __init__(self, p_answer: float = 0.3, max_calls: int = 3) -> None:
        self.p_answer = p_answer
        self.max_calls = max_calls

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        """Random calls or a nonsense answer, drawn from the conversation's ``rng``."""
        rng = conversation.rng
        functions = [t.get("function", t) for t in conversation.tools if isinstance(t, Mapping)]
        if not functions or rng.random() < self.p_answer:
            return assistant_message(_nonsense(rng))
        calls = []
        for i in range(rng.randint(1, self.max_calls)):
            fn = rng.choice(functions)
            props = (fn.get("parameters") or {}).get("properties") or {}
            arguments = {name: _random_value(spec if isinstance(spec, Mapping) else {}, rng)
                         for name, spec in props.items() if rng.random() < 0.5}
            calls.append(tool_call(str(fn.get("name", "")), arguments, i))
        return assistant_message("", calls)

