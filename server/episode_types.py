"""What the episode manager returns: plain dataclasses, its public API.

The manager knows nothing of HTTP; the routes turn these into the pydantic models of
``toolgym.server.models`` (the only place pydantic is used) and the wire stays as it was.
Observations and infos are kept in their wire form (JSON-ready dicts), because that is what
the store records and what every caller needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from toolgym.server.sandbox.pool import PoolStatus
from toolgym.server.sandbox.teardown import TeardownStatus

__all__ = [
    "EpisodePage",
    "EpisodeSnapshot",
    "EpisodeSummary",
    "ManagerStatus",
    "RecordedStep",
    "ResetResult",
    "Sample",
    "StepResult",
]


@dataclass(frozen=True)
class ResetResult:
    """A new episode: its id and first observation.

    Also what a fork answers: then the observation is the one of the turn it was forked at.
    """

    episode_id: str
    observation: dict[str, Any]
    info: dict[str, Any]


@dataclass(frozen=True)
class StepResult:
    """One step's answer, exactly as the policy is shown it (after ``max_output_chars``)."""

    observation: dict[str, Any]
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The JSON object the store records (and the trajectory prints), key order kept."""
        return {"observation": self.observation, "reward": self.reward, "terminated": self.terminated,
                "truncated": self.truncated, "info": self.info}

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> StepResult:
        """Back from ``to_wire`` (a stored step)."""
        return cls(observation=raw["observation"], reward=float(raw["reward"]), terminated=bool(raw["terminated"]),
                   truncated=bool(raw["truncated"]), info=raw["info"])


@dataclass(frozen=True)
class Sample:
    """The tokens the policy sampled for one turn, and their log-probabilities, as the trainer sent them.

    The server never reads them: it stores them beside the step so an export gives the trainer back
    exactly what it sampled (re-tokenizing the text would not). ``logprobs``, when present, has one
    entry per token id.
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        """``{"token_ids": [...], "logprobs": [...] | null}``: what the store keeps and the trajectory shows."""
        return {"token_ids": list(self.token_ids), "logprobs": None if self.logprobs is None else list(self.logprobs)}

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Sample:
        """Back from ``to_wire`` (a stored step)."""
        logprobs = raw.get("logprobs")
        return cls(token_ids=tuple(int(t) for t in raw["token_ids"]),
                   logprobs=None if logprobs is None else tuple(float(x) for x in logprobs))

    def mean_logprob(self) -> float | None:
        """The mean of ``logprobs`` (None without them or without tokens): the task statistics' figure."""
        if not self.logprobs:
            return None
        return math.fsum(self.logprobs) / len(self.logprobs)


@dataclass(frozen=True)
class RecordedStep:
    """A played turn: the action in wire form and what it gave."""

    turn: int
    action: Any
    result: StepResult
    mean_logprob: float | None = None
    sample: Sample | None = None

    def to_wire(self) -> dict[str, Any]:
        """One trajectory entry: turn, action, then the result's keys, then ``sample`` if the trainer sent one.

        The mean log-probability is left out: it is the trainer's own summary, kept for the task
        statistics. A step without a sample has no ``sample`` key, so such trajectories read as before.
        """
        wire = {"turn": self.turn, "action": self.action, **self.result.to_wire()}
        if self.sample is not None:
            wire["sample"] = self.sample.to_wire()
        return wire


@dataclass(frozen=True)
class EpisodeSummary:
    """One line of the episode listing."""

    episode_id: str
    env_id: str
    task_id: str
    split: str
    turn: int
    status: str
    reason: str | None
    total_reward: float


@dataclass(frozen=True)
class EpisodePage:
    """A page of the caller's episodes and how many there are in all."""

    episodes: list[EpisodeSummary]
    total: int


@dataclass(frozen=True)
class EpisodeSnapshot:
    """An episode as it stands: what it was reset with, its status, and every step so far.

    ``reset`` holds the reset's ``observation`` and ``info``.
    """

    episode_id: str
    env_id: str
    task_id: str
    split: str
    seed: int | None
    options: dict[str, Any]
    turn: int
    status: str
    reason: str | None
    total_reward: float
    reset: dict[str, Any]
    steps: list[RecordedStep] = field(default_factory=list)


@dataclass(frozen=True)
class ManagerStatus:
    """What ``/readyz`` and ``/metrics`` report about the manager.

    Attributes:
        accepting: False once shutdown began (resets are refused).
        open_episodes: unfinished episodes, resets under way included.
        max_live_episodes: the limit on ``open_episodes``.
        warm_pool: None on a server without a sandbox backend.
        teardown: sandboxes of ended episodes still being removed in the background.
        store_backlog: writes queued for the store's writer thread.
    """

    accepting: bool
    open_episodes: int
    max_live_episodes: int
    warm_pool: PoolStatus | None
    teardown: TeardownStatus
    store_backlog: int

    @property
    def ready(self) -> bool:
        """Whether a reset would be accepted now (the backend check aside)."""
        return self.accepting and self.open_episodes < self.max_live_episodes
