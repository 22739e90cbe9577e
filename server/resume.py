"""Rebuilding a live episode of a run that crashed: replay its acknowledged steps, check each one.

An episode is deterministic given its task, options, seed, actions and the outputs of the code it
runs (``toolgym.envs.base``), and every acknowledged step is on disk (``toolgym.server.store``).
So after ``kill -9`` an episode that was live is rebuilt by starting a fresh one on a new sandbox
and playing the recorded actions again. Each replayed step must give back the recorded result
(observation, reward, terminated, truncated, info) exactly: if one does not (tool code that reads
the clock or draws random numbers, model code that prints them, a timeout that fell the other way
on a loaded machine), the replay stops and the caller marks the episode ``interrupted``. A client
never continues a trajectory that differs from the one it was answered.

Everything here blocks (the env runs code in the sandbox): the manager runs it on a worker thread.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

from toolgym.actions import action_from_wire
from toolgym.envs.base import EnvFamily, Episode, Step, Task
from toolgym.envs.runner import Runner
from toolgym.errors import SandboxError, ToolGymError
from toolgym.server.episode_types import RecordedStep, ResetResult, StepResult
from toolgym.server.live_episode import LiveEpisode, SandboxSlot, cap_output, stored_snapshot
from toolgym.server.sandbox.base import Sandbox
from toolgym.server.sandbox.pool import SandboxPool
from toolgym.server.store import Store
from toolgym.server.tasks import TaskRegistry

__all__ = ["Rebuilt", "Replay", "rebuild", "replay", "result_of"]


def result_of(step: Step, max_output_chars: int) -> StepResult:
    """The answer to one env step, as the manager stores and returns it (long messages cut).

    Shared by a played step and a replayed one, so both are built the same way and compare equal.
    """
    observation = step.observation.to_wire()
    if cap_output(observation, max_output_chars):
        step.info["output_truncated"] = True
    return StepResult(observation=observation, reward=float(step.reward), terminated=bool(step.terminated),
                      truncated=bool(step.truncated), info=step.info)


def _wire(value: Any) -> Any:
    """``value`` as it reads back from the store (JSON), so a fresh result compares with a stored one."""
    return json.loads(json.dumps(value))


@dataclass
class Replay:
    """What a replay gave: the rebuilt env, or where and how it parted from the record."""

    env: Episode | None
    divergence: str | None = None
    steps: int = 0
    """Recorded steps played again and found equal."""


def replay(
    family: EnvFamily, task: Task, options: dict[str, Any], seed: int | None, runner: Runner | None,
    reset: dict[str, Any], steps: list[RecordedStep], max_output_chars: int,
) -> Replay:
    """Start ``task`` afresh on ``runner`` and play ``steps`` again, checking each result (blocking).

    The env's random generator is made from ``seed`` as a reset makes it (no built-in family draws
    from it; a seedless episode of a family that did would part from its record and be reported).

    Args:
        family: the episode's env family.
        task: its task.
        options: its stored options (``split`` and ``sampler`` are the manager's, dropped here).
        seed: its reset seed, or None.
        runner: where its code runs (the new sandbox), or None for a family without one.
        reset: the stored reset answer (``observation`` and ``info``).
        steps: the acknowledged steps, in turn order.
        max_output_chars: the server's message cap, applied as when the steps were played.

    Returns:
        The env at the turn after the last step, or ``env=None`` and ``divergence`` saying what differed.

    Raises:
        SandboxError: the new sandbox failed (the replay may be retried; nothing is recorded).
    """
    raw = {k: v for k, v in options.items() if k not in ("split", "sampler")}
    parsed = family.parse_options(raw, task.split)
    rng = random.Random(seed) if seed is not None else random.Random(secrets.randbits(64))
    env = family.start(task, parsed, runner, random.Random(rng.getrandbits(64)))
    observation, info = env.reset()
    if _wire({"observation": observation.to_wire(), "info": info}) != _wire(reset):
        return Replay(None, "the reset observation differs from the recorded one")
    for done, recorded in enumerate(steps):
        result = result_of(env.step(action_from_wire(recorded.action)), max_output_chars)
        fresh, stored = _wire(result.to_wire()), _wire(recorded.result.to_wire())
        if fresh != stored:
            fields = sorted(k for k in set(fresh) | set(stored) if fresh.get(k) != stored.get(k))
            return Replay(None, f"turn {recorded.turn} gave a different {', '.join(fields)} on replay", done)
    return Replay(env, None, len(steps))


@dataclass
class Rebuilt:
    """What ``rebuild`` gave: the episode, held again, or why it cannot be (then it is not live)."""

    live: LiveEpisode | None
    failure: str | None = None
    """``replay_diverged: ...`` or ``replay_failed: ...``: the reason to record, None when rebuilt."""
    steps: int = 0
    seconds: float = 0.0


def rebuild(
    store: Store, tasks: TaskRegistry, pool: SandboxPool | None, max_output_chars: int, episode_id: str,
) -> Rebuilt | None:
    """A crashed run's live episode, rebuilt on a new sandbox from its stored rows (blocking).

    Same id, owner, turn, steps and ``Idempotency-Key`` map as the run that played them. The new
    sandbox is removed here when the replay fails or raises.

    Returns:
        None when the episode is no longer live in the store (nothing to rebuild), else a
        ``Rebuilt`` with the episode, or the reason it could not be rebuilt.

    Raises:
        SandboxError: no sandbox could be made, or it failed during the replay (retryable).
    """
    row = store.get_episode(episode_id)
    snapshot = None if row is None else stored_snapshot(store, row.owner, episode_id)
    if row is None or snapshot is None or row.status != "live":
        return None
    keys = store.idempotency_keys(episode_id)
    family = tasks.family(row.env_id)
    try:
        task = tasks.get(family.env_id, row.task_id)
    except ToolGymError as exc:
        return Rebuilt(None, f"replay_failed: task {row.task_id!r} is gone ({exc.message})")
    sandbox: Sandbox | None = None
    if family.needs_sandbox:
        if pool is None:
            raise SandboxError(f"env {family.env_id} needs a sandbox and this server has no backend")
        sandbox = pool.replace(episode_id, row.owner)
    slot = SandboxSlot(episode_id, sandbox)
    started = time.perf_counter()
    try:
        done = replay(family, task, row.options, row.seed, slot.run if family.needs_sandbox else None,
                      row.reset_result, snapshot.steps, max_output_chars)
    except BaseException:
        if sandbox is not None:
            sandbox.close()
        raise
    seconds = time.perf_counter() - started
    if done.env is None:
        if sandbox is not None:
            sandbox.close()
        return Rebuilt(None, f"replay_diverged: {done.divergence}", done.steps, seconds)
    live = LiveEpisode(
        id=episode_id, owner=row.owner, family=family, task=task, options=row.options, seed=row.seed,
        env=done.env, slot=slot, created=row.created, last_active=time.monotonic(),
        reset_result=ResetResult(episode_id, row.reset_result["observation"], row.reset_result["info"]),
        steps=list(snapshot.steps), idempotency=keys, total_reward=row.total_reward,
    )
    return Rebuilt(live, None, done.steps, seconds)
