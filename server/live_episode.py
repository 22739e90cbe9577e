"""The manager's bookkeeping for one episode, and the reads of episodes it no longer holds.

``LiveEpisode`` is what ``EpisodeManager`` keeps per episode in memory (env, sandbox slot,
steps, lock); ``stored_snapshot`` and ``stored_page`` rebuild the public dataclasses from
the store for episodes that ended, belong to a previous run or to another replica. Both
readers block (database I/O): the manager runs them on a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolgym.envs.base import EnvFamily, Episode, Task
from toolgym.envs.runner import RunRequest, RunResult
from toolgym.errors import SandboxError
from toolgym.server.episode_types import (
    EpisodePage,
    EpisodeSnapshot,
    EpisodeSummary,
    RecordedStep,
    ResetResult,
    Sample,
    StepResult,
)
from toolgym.server.sandbox.base import Sandbox
from toolgym.server.store import Store

__all__ = ["LiveEpisode", "SandboxSlot", "cap_output", "stored_page", "stored_snapshot"]


@dataclass
class SandboxSlot:
    """Where an episode's env runs code.

    The env holds the slot as its runner; the manager swaps the sandbox behind it when one
    fails, and the env never notices.
    """

    episode_id: str
    sandbox: Sandbox | None = None

    def run(self, request: RunRequest) -> RunResult:
        """Run on the current sandbox (the env's runner)."""
        if self.sandbox is None:
            raise SandboxError(f"episode {self.episode_id} has no sandbox")
        return self.sandbox.run(request)

    __call__ = run

    def run_many(self, requests: Sequence[RunRequest]) -> list[RunResult]:
        """A turn's parallel calls at once (``Sandbox.run_many``); the env finds it via ``run_all``."""
        if self.sandbox is None:
            raise SandboxError(f"episode {self.episode_id} has no sandbox")
        return self.sandbox.run_many(requests)


@dataclass
class LiveEpisode:
    """An episode this process holds: its env, its sandbox slot, its steps so far."""

    id: str
    owner: str
    family: EnvFamily
    task: Task
    options: dict[str, Any]
    seed: int | None
    env: Episode
    slot: SandboxSlot
    reset_result: ResetResult
    created: float
    last_active: float
    steps: list[RecordedStep] = field(default_factory=list)
    idempotency: dict[str, int] = field(default_factory=dict)
    total_reward: float = 0.0
    finished: bool = False
    reason: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    detached: bool = False
    """Set when the manager dropped this copy (a step's store write failed after its env had
    moved on): a request still holding it must look the episode up again, which rebuilds it
    from the store."""

    @property
    def turn(self) -> int:
        """Steps taken so far."""
        return len(self.steps)

    def snapshot(self) -> EpisodeSnapshot:
        """The episode as it stands (no I/O: everything is in memory)."""
        return EpisodeSnapshot(
            episode_id=self.id, env_id=self.family.env_id, task_id=self.task.id, split=self.task.split,
            seed=self.seed, options=self.options, turn=self.turn, status="finished" if self.finished else "live",
            reason=self.reason, total_reward=self.total_reward,
            reset={"observation": self.reset_result.observation, "info": self.reset_result.info},
            steps=list(self.steps),
        )


def stored_snapshot(store: Store, owner: str, episode_id: str) -> EpisodeSnapshot | None:
    """An episode this process no longer holds, from its stored rows (blocking I/O).

    Returns None when there is no such episode of ``owner``.
    """
    row = store.get_episode(episode_id)
    if row is None or row.owner != owner:
        return None
    steps = [
        RecordedStep(turn=s["turn"], action=s["action"], mean_logprob=s["mean_logprob"],
                     result=StepResult.from_wire(s),
                     sample=None if s["sample"] is None else Sample.from_wire(s["sample"]))
        for s in store.steps(row.id)
    ]
    return EpisodeSnapshot(
        episode_id=row.id, env_id=row.env_id, task_id=row.task_id, split=row.split, seed=row.seed,
        options=row.options, turn=row.turn, status=row.status, reason=row.reason, total_reward=row.total_reward,
        reset=row.reset_result, steps=steps,
    )


def stored_page(store: Store, owner: str, status: str | None, offset: int, limit: int) -> EpisodePage:
    """A page of ``owner``'s episodes from the store, oldest first (blocking I/O)."""
    rows, total = store.list_episodes(owner, status=status, offset=offset, limit=limit)
    return EpisodePage(episodes=[
        EpisodeSummary(episode_id=r.id, env_id=r.env_id, task_id=r.task_id, split=r.split, turn=r.turn,
                       status=r.status, reason=r.reason, total_reward=r.total_reward)
        for r in rows
    ], total=total)


def cap_output(observation: dict[str, Any], cap: int) -> bool:
    """Cut message text over ``cap`` (``max_output_chars``) characters; returns whether anything was cut.

    Only what the policy is shown is cut: the env has already verified the whole output.
    """
    cut = False
    for message in observation.get("messages", []):
        content = message.get("content")
        if isinstance(content, str) and len(content) > cap:
            dropped = len(content) - cap
            message["content"] = content[:cap] + f"\n[... {dropped} more characters cut: max_output_chars]"
            cut = True
    return cut
