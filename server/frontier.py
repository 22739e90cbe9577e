"""Which tasks matter now: LoopTool's Greedy Capability Probing, served from real rewards.

LoopTool (docs/methods.md#looptool) decodes each sample greedily and sorts it: correct with low
perplexity -> *mastered* (drop it), correct with high perplexity -> *fragile* (keep it),
wrong -> *failing* (verify its label, grow variants). The server sees every reward it hands
out, and a step may carry the policy's mean token log-probability, so it classes each task
from what it served:

- ``unseen``: no finished episode yet;
- ``failing``: fewer than half of its finished episodes succeeded;
- ``mastered``: every finished episode (at least ``MIN_EPISODES``) succeeded and the policy's
  perplexity ``exp(-mean_logprob)`` is at most ``PPL_THRESHOLD`` (no log-probabilities
  reported: success alone decides);
- ``fragile``: the rest (mostly right, but unsure or inconsistent).

"Succeeded" is the family's ``episode_success`` rule, stored with each finished episode.
The ``frontier`` sampler skips mastered tasks and favours fragile and failing ones.

*Retired* tasks (``POST .../tasks/retire``, kept in the store) are drawn by no sampler:
``frontier_sample`` and ``uniform_sample`` leave them out, ``draw_task`` picks between the two.
A retired task still resets by id.
"""

from __future__ import annotations

import math
import random

from toolgym.envs.base import SPLITS, Task
from toolgym.errors import ValidationFailed
from toolgym.server.models import TaskStat
from toolgym.server.store import Store, TaskStatsRow
from toolgym.server.tasks import TaskRegistry

__all__ = [
    "MIN_EPISODES",
    "PPL_THRESHOLD",
    "WEIGHTS",
    "active_ids",
    "classify",
    "draw_task",
    "frontier_sample",
    "task_stats",
    "uniform_sample",
]

MIN_EPISODES = 2
PPL_THRESHOLD = 1.5
WEIGHTS = {"failing": 3.0, "fragile": 3.0, "unseen": 1.0, "mastered": 0.0}


def classify(row: TaskStatsRow | None) -> str:
    """A task's class from its served episodes: ``unseen``, ``failing``, ``mastered`` or ``fragile`` (module doc)."""
    if row is None or row.finished == 0:
        return "unseen"
    rate = row.successes / row.finished
    if rate < 0.5:
        return "failing"
    confident = row.mean_logprob is None or math.exp(-row.mean_logprob) <= PPL_THRESHOLD
    if rate == 1.0 and row.finished >= MIN_EPISODES and confident:
        return "mastered"
    return "fragile"


def task_stats(tasks: TaskRegistry, store: Store, env_id: str) -> list[TaskStat]:
    """One ``TaskStat`` per registered task of ``env_id``, split by split, retired ones included.

    A task with no episode yet is listed too, as ``unseen`` with zero counts.
    """
    rows = {r.task_id: r for r in store.task_stats(env_id)}
    out = []
    for split in SPLITS:
        for task_id in tasks.ids(env_id, split):
            row = rows.get(task_id)
            out.append(TaskStat(
                task_id=task_id, split=split, episodes=row.episodes if row else 0,
                finished=row.finished if row else 0, mean_return=row.mean_return if row else 0.0,
                success_rate=(row.successes / row.finished) if row and row.finished else 0.0,
                mean_logprob=row.mean_logprob if row else None, status=classify(row),
            ))
    return out


def active_ids(tasks: TaskRegistry, store: Store, env_id: str, split: str) -> list[str]:
    """The task ids of ``split`` that are not retired, in registration order."""
    ids = tasks.ids(env_id, split)
    retired = store.retired_ids(env_id)
    return [tid for tid in ids if tid not in retired] if retired else ids


def _active_or_raise(tasks: TaskRegistry, store: Store, env_id: str, split: str, rng: random.Random) -> list[str]:
    ids = active_ids(tasks, store, env_id, split)
    if not ids:
        if not tasks.ids(env_id, split):
            tasks.sample(env_id, split, rng)  # raises the registry's "no tasks" error
        raise ValidationFailed(
            f"every {split} task of {env_id} is retired; register new ones or un-retire some"
            f" (POST /v1/envs/{env_id}/tasks/unretire)", split=split,
        )
    return ids


def uniform_sample(tasks: TaskRegistry, store: Store, env_id: str, split: str, rng: random.Random) -> Task:
    """A uniform draw from the tasks of ``split`` that are not retired.

    With none retired it is the same draw as ``TaskRegistry.sample`` for the same ``rng``.
    """
    ids = _active_or_raise(tasks, store, env_id, split, rng)
    return tasks.get(env_id, rng.choice(ids))


def frontier_sample(tasks: TaskRegistry, store: Store, env_id: str, split: str, rng: random.Random) -> Task:
    """Draw from ``split`` by ``WEIGHTS`` of each task's class, retired tasks left out.

    When every task left is mastered, fall back on a uniform draw among them (there is nothing
    left to learn from, but reset still works).
    """
    ids = _active_or_raise(tasks, store, env_id, split, rng)
    rows = {r.task_id: r for r in store.task_stats(env_id)}
    weights = [WEIGHTS[classify(rows.get(tid))] for tid in ids]
    if sum(weights) == 0:
        return tasks.get(env_id, rng.choice(ids))
    return tasks.get(env_id, rng.choices(ids, weights=weights, k=1)[0])


def draw_task(
    tasks: TaskRegistry, store: Store, env_id: str, split: str, sampler: str, rng: random.Random
) -> Task:
    """Reset's task draw without a ``task_id``: ``sampler`` is ``uniform`` or ``frontier``."""
    if sampler == "frontier":
        return frontier_sample(tasks, store, env_id, split, rng)
    return uniform_sample(tasks, store, env_id, split, rng)
