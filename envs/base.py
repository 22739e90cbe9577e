"""The env-family contract: how an environment plugs into the ToolGym server.

An *env family* (``EnvFamily``) is one kind of environment, e.g. ``toolgym/ToolUse-v0``. It
validates task records, documents its reset options, and starts *episodes*. An ``Episode`` is
the server-side state of one rollout: ``reset`` gives the first observation, ``step`` takes
one policy action and returns what Gymnasium's ``step`` returns, with a verifiable reward.

Episodes never touch HTTP, threads or containers. When one needs to run untrusted code it
calls the ``Runner`` it was given (one episode's sandbox, already chosen by the server), and
it computes rewards itself from what came back, so a policy cannot write its own reward.

Episodes must be deterministic given (task, options, seed, actions, tool outputs): the server
forks an episode by replaying its recorded actions into a fresh one.

A family may also take part in the served data loop (LoopTool's: grow failing tasks, judge
labels) by declaring *capabilities*, mixins it inherits next to ``EnvFamily``: ``Gradable``
(one gold answer per task, gradable without a sandbox), ``Judgeable`` (a label a judge can
compare with an answer) and ``Expandable`` (new tasks from an old one). The server asks
``EnvFamily.capabilities`` and nothing else, so a new family plugs into the data loop
without a server change; a family without a capability gets a 422 that names it.
"""

from __future__ import annotations

import functools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from toolgym.actions import Action, AssistantMessage, action_from_wire
from toolgym.envs.options import options_from_mapping, options_schema
from toolgym.envs.runner import Runner
from toolgym.errors import ValidationFailed

__all__ = [
    "SPLITS",
    "Action",
    "AssistantMessage",
    "Capability",
    "EnvFamily",
    "Episode",
    "Expandable",
    "Gradable",
    "JudgeView",
    "Judgeable",
    "Observation",
    "Runner",
    "Step",
    "StepStatus",
    "Task",
    "make_info",
    "options_from_mapping",
    "options_schema",
]

SPLITS = ("train", "validation", "test")

StepStatus = Literal["ok", "invalid_action", "timeout", "infra_error"]


@dataclass
class Observation:
    """New chat messages for the policy, and the tool schemas when they are first shown."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON body of an observation; ``tools`` is left out, not null, on steps that show none."""
        out: dict[str, Any] = {"messages": self.messages}
        if self.tools is not None:
            out["tools"] = self.tools
        return out


@dataclass
class Step:
    """One transition, as gymnasium's ``step`` returns it.

    ``terminated``: the episode reached an end of its own (an answer, say); ``truncated``: a limit
    such as ``max_turns`` cut it off.
    """
    observation: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


def make_info(
    *,
    status: StepStatus = "ok",
    reward_components: Mapping[str, float] | None = None,
    metrics: Mapping[str, float] | None = None,
    reason: str | None = None,
    output_truncated: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The ``info`` dict every step returns (docs/architecture.md).

    It holds no timing and no ids, so two seeded runs give equal ``info``.
    """
    info: dict[str, Any] = {
        "status": status,
        "retryable": False,
        "reward_components": dict(reward_components or {}),
        "metrics": dict(metrics or {}),
        "output_truncated": output_truncated,
    }
    if reason is not None:
        info["reason"] = reason
    info.update(extra)
    return info


@dataclass(frozen=True)
class Task:
    """A registered task: its full record (gold included) stays on the server."""

    env_id: str
    id: str
    split: str
    record: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _checked_step(step: Callable[[Any, Action], Step]) -> Callable[[Any, Any], Step]:
    """``step`` behind the action-shape check, so a malformed action never reaches the family.

    An action of no valid shape becomes an ``invalid_action`` step (reward 0, no messages) and
    the episode stays at its turn; an assistant message given as a dict is converted, as on the
    wire.
    """

    @functools.wraps(step)
    def checked(self: Any, action: Any) -> Step:
        if not isinstance(action, str | AssistantMessage):
            try:
                action = action_from_wire(action)
            except ValidationFailed as exc:
                return Step(Observation(messages=[]), 0.0, False, False,
                            make_info(status="invalid_action", message=exc.message))
        return step(self, action)

    checked.__toolgym_checked__ = True  # type: ignore[attr-defined]
    return checked


class Episode(ABC):
    """One rollout's state. Not thread-safe: the server serializes calls per episode.

    Every subclass's ``step`` is wrapped (``__init_subclass__``) so that a Python caller's
    malformed action is an ``invalid_action`` step rather than a crash deep in a parser: the
    families only ever see a ``str`` or an ``AssistantMessage``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if callable(step) and not getattr(step, "__toolgym_checked__", False):
            cls.step = _checked_step(step)  # type: ignore[method-assign,assignment]

    @abstractmethod
    def reset(self) -> tuple[Observation, dict[str, Any]]:
        """The first observation and ``info`` (same keys as a step's, status ``ok``)."""

    @abstractmethod
    def step(self, action: Action) -> Step:
        """Apply one action.

        Must leave the episode unchanged if the runner raises ``SandboxError`` (the server retries
        the step on a fresh sandbox).
        """

    @property
    @abstractmethod
    def turn(self) -> int:
        """Number of steps taken so far."""


class EnvFamily(ABC):
    """One kind of environment.

    Subclasses set the class attributes and implement ``validate_record`` and ``start`` (the
    other methods have defaults); ``GET /v1/envs`` publishes the attributes and
    ``options_schema(options_type)``. A family that takes part in the data loop also inherits
    capability mixins (``Gradable``, ``Judgeable``, ``Expandable``; see ``capabilities``).
    """

    env_id: ClassVar[str]
    description: ClassVar[str]
    action_format: ClassVar[str]
    observation_format: ClassVar[str]
    reward_spec: ClassVar[str]
    record_format: ClassVar[str]
    options_type: ClassVar[type]
    """A dataclass; each field's ``metadata["doc"]`` documents the option."""
    needs_sandbox: ClassVar[bool] = True
    """Whether episodes run code in a sandbox. A family that needs none (FunctionCall) is reset and
    stepped on the server's event loop, where a thread handoff would cost more than its pure
    computation: its ``reset`` and ``step`` must not block (no I/O, no long computation), or they
    stall every other request of that server."""

    @abstractmethod
    def validate_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalize one task record (the gold included).

        Raises ``ValidationFailed`` naming the bad field. May drop ``id`` and ``split``.
        """

    def task_metadata(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """What ``GET .../tasks`` may show of a task: never the gold."""
        return {}

    def builtin_records(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """Tasks this family ships, as ``(split, record)``; records carry an ``id``."""
        return ()

    def parse_options(self, raw: Mapping[str, Any], split: str) -> Any:
        """Reset ``options`` -> an ``options_type`` instance. Raises ``ValidationFailed``."""
        return options_from_mapping(self.options_type, raw)

    def episode_success(self, total_reward: float, last_info: Mapping[str, Any]) -> bool:
        """Whether a finished episode solved its task (for task statistics and the frontier sampler).

        Default: a return of at least 1, right for binary rewards.
        """
        return total_reward >= 1.0

    @abstractmethod
    def start(self, task: Task, options: Any, runner: Runner | None, rng: random.Random) -> Episode:
        """A new episode of ``task``. ``runner`` is None when ``needs_sandbox`` is False."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The data-loop capabilities this family declares by inheriting their mixins.

        The mixins are ``Gradable``, ``Judgeable`` and ``Expandable``; the set is empty for a family
        that only serves episodes. Derived from the class, so a declaration cannot disagree with the
        code.
        """
        found: set[Capability] = set()
        if isinstance(self, Gradable):
            found.add("grade")
        if isinstance(self, Judgeable):
            found.add("judge")
        if isinstance(self, Expandable):
            found.add("expand")
        return frozenset(found)


# --- data-loop capabilities: mixins a family inherits next to EnvFamily -----------------------

Capability = Literal["grade", "judge", "expand"]
"""``grade`` (``Gradable``), ``judge`` (``Judgeable``), ``expand`` (``Expandable``)."""


@dataclass(frozen=True)
class JudgeView:
    """What a label judge is shown of one task and one policy answer (LoopTool's JGLV).

    The conversation the policy was given, its tools (OpenAI schemas, may be empty), the task's
    label as "Response 1" and the policy's answer as "Response 2", both as text.
    """

    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[Mapping[str, Any]]
    label: str
    response: str


class Gradable(ABC):
    """Capability ``grade``: every task has one gold answer, and full reward is told without a sandbox.

    Whether an answer earns full reward can be told without a sandbox because the check reads a
    final answer; it does not run one.

    The data loop uses it twice: a proposed variant is kept only if its own gold grades as
    correct (so no task enters the set that no policy could solve), and the judge is not asked
    about an answer that already grades as correct.
    """

    @abstractmethod
    def gold_answer(self, record: Mapping[str, Any]) -> Action:
        """The gold of a validated ``record`` written as a policy would write it.

        It is an action ``grade`` must accept on that record.
        """

    @abstractmethod
    def grade(self, task: Task, action: Action) -> bool:
        """Whether ``action``, as the policy's whole answer, earns full reward on ``task``.

        Full reward under every scoring rule the family offers. May block (a verifier worker
        process); the server calls it from a worker thread.
        """


class Judgeable(Gradable):
    """Capability ``judge``: a task's label can be put before a judge next to a policy's answer.

    The point is to find labels that are wrong (LoopTool's Judgement-Guided Label Verification).
    Implies ``grade``: an answer that already grades as correct is never sent to a judge.
    """

    @abstractmethod
    def judge_view(self, task: Task, response: Action) -> JudgeView:
        """How the judge sees ``task`` and the policy's ``response``."""


class Expandable(ABC):
    """Capability ``expand``: new tasks can be grown from an existing one.

    This is LoopTool's Error-Driven Data Expansion. The data loop validates, deduplicates and
    (for a ``Gradable`` family) grades every proposal before registering it.
    """

    @abstractmethod
    def variants(self, record: Mapping[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
        """Up to ``n`` new records like ``record`` (which carries its ``id``), drawn from ``rng`` only.

        Drawing only from ``rng`` means the same seed proposes the same variants; ``[]`` when this
        record has none (e.g. it was not made by a generator the family knows). May raise
        ``ValidationFailed`` for a record it cannot read.
        """
