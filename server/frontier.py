"""Which tasks matter now: LoopTool's Greedy Capability Probing, served from real rewards.

LoopTool (PAPERS.md §2) decodes each sample greedily and sorts it: correct with low
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
"""

from __future__ import annotations

import math
import random

from toolgym.envs.base import Task
from toolgym.server.models import TaskStat
from toolgym.server.store import Store, TaskStatsRow
from toolgym.server.tasks import TaskRegistry

__all__ = ["MIN_EPISODES", "PPL_THRESHOLD", "WEIGHTS", "classify", "frontier_sample", "task_stats"]

MIN_EPISODES = 2
PPL_THRESHOLD = 1.5
WEIGHTS = {"failing": 3.0, "fragile": 3.0, "unseen": 1.0, "mastered": 0.0}


def classify(row: TaskStatsRow | None) -> str:
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
    rows = {r.task_id: r for r in store.task_stats(env_id)}
    out = []
    for split in ("train", "validation", "test"):
        for task_id in tasks.ids(env_id, split):
            row = rows.get(task_id)
            out.append(TaskStat(
                task_id=task_id, split=split, episodes=row.episodes if row else 0,
                finished=row.finished if row else 0, mean_return=row.mean_return if row else 0.0,
                success_rate=(row.successes / row.finished) if row and row.finished else 0.0,
                mean_logprob=row.mean_logprob if row else None, status=classify(row),
            ))
    return out


def frontier_sample(tasks: TaskRegistry, store: Store, env_id: str, split: str, rng: random.Random) -> Task:
    """Draw from ``split`` by ``WEIGHTS`` of each task's class; when every task is mastered,
    fall back on a uniform draw (there is nothing left to learn from, but reset still works)."""
    ids = tasks.ids(env_id, split)
    rows = {r.task_id: r for r in store.task_stats(env_id)}
    weights = [WEIGHTS[classify(rows.get(tid))] for tid in ids]
    if not ids or sum(weights) == 0:
        return tasks.sample(env_id, split, rng)
    return tasks.get(env_id, rng.choices(ids, weights=weights, k=1)[0])
