r"""The served data loop (LoopTool, arXiv 2511.09148): grow failing tasks, retire mastered ones, judge labels.

That is: put a task's label before a judge. Nothing here speaks HTTP (``routes/dataloop.py``
does).

What a family can do here it declares itself, by the capability mixins of
``toolgym.envs.base`` (``EnvFamily.capabilities``): ``Expandable`` to grow tasks,
``Gradable`` to have their gold checked, ``Judgeable`` to have a label judged. The code here
names no env: a family without a capability gets a 422 that says which one it lacks.

Expansion (LoopTool's Error-Driven Data Expansion): for each selected task -- by id, or every
task of the chosen ``splits`` whose class (``frontier.classify``) is in ``status``, retired
ones left out -- the family's ``variants(record, n, rng)`` proposes up to ``n`` new records.
Each is kept only if it

1. passes the family's ``validate_record`` (for CodeMath: math-verify parses the gold);
2. has a gold that earns full reward, for a ``Gradable`` family: ``grade(task,
   gold_answer(record))`` (FunctionCall: the gold calls as Qwen ``<tool_call>`` tags score 1
   under *every* verifier of the env; CodeMath: ``\boxed{gold}`` verifies against the gold
   with math-verify). Another family is checked by ``validate_record`` alone;
3. is new: no task of the env has the same content (the record without its ``metadata`` and
   ``slots``: a variant may well rebuild a sibling task), and its id
   ``<parent id>~<8 hex of its content>`` is free, so the same variant proposed again
   (another seed, another call) is a duplicate, not a copy.

Kept variants are registered in their parent's split, with ``parent_id`` in their metadata,
and persisted like any registered task. Each parent gets its own generator seeded from
``(seed, parent id)``: the same seed and tasks give the same variants, whatever else is
selected. A parent whose family proposes nothing (a text-gold FunctionCall task, a CodeMath
task not from a shipped generator) is *skipped*.

Retirement: a retired task is drawn by no sampler (``frontier.py``), still resets by id, and
is listed with ``retired: true`` in its metadata. The store keeps it across restarts;
``apply_retirements`` marks the registry again at startup.

Status selections default to the ``train`` split: expanding or retiring evaluation tasks
because of how the policy did on them would change the evaluation set during training.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolgym.envs.base import SPLITS, Action, EnvFamily, Expandable, Gradable, Judgeable, Task
from toolgym.errors import DuplicateTask, EnvNotFound, TaskNotFound, ValidationFailed
from toolgym.server.frontier import task_stats
from toolgym.server.judge import JudgeCase
from toolgym.server.store import Store
from toolgym.server.tasks import MAX_TASK_ID_CHARS, TaskRegistry, content_id

__all__ = [
    "Expansion",
    "Rejection",
    "apply_retirements",
    "expand",
    "expandable",
    "judge_case",
    "judgeable",
    "retire",
    "unretire",
    "variant_id",
]

log = logging.getLogger(__name__)


# --- capabilities: what the family says it can do ----------------------------------------------
def _lacks(family: EnvFamily, doing: str, mixin: type, why: str) -> ValidationFailed:
    """The 422 for a family without a capability: what it cannot do, why, and how a family gains it.

    How is the mixin to inherit, so the message serves a user and a family's author alike.
    """
    have = sorted(family.capabilities)
    return ValidationFailed(
        f"env {family.env_id} cannot {doing}: {why} (its family does not implement"
        f" toolgym.envs.base.{mixin.__name__}; its data-loop capabilities: {have or 'none'})",
        env_id=family.env_id, capabilities=have,
    )


def expandable(family: EnvFamily) -> Expandable:
    """The family as an ``Expandable``; 422 if it cannot grow tasks."""
    if not isinstance(family, Expandable):
        raise _lacks(family, "grow new tasks", Expandable,
                     "it proposes no variants(record, n, rng) of a task")
    return family


def judgeable(family: EnvFamily) -> Judgeable:
    """The family as a ``Judgeable``; 422 if its tasks have no single label to judge."""
    if not isinstance(family, Judgeable):
        raise _lacks(family, "be judged", Judgeable,
                     "its tasks have no single label to compare an answer with")
    return family


# --- expansion ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rejection:
    """A proposed variant that was not kept: its parent task and why (invalid record, gold not scoring 1, duplicate)."""

    parent_id: str
    reason: str


@dataclass
class Expansion:
    """What one expansion did: the ``seed`` it used, the ids it ``created``, the parents it ``skipped``.

    The seed is the one given, else a random one, reported so the run can be repeated. A skipped
    parent is one whose family proposed nothing; each variant dropped is in ``rejections``.
    """

    seed: int
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """How many proposed variants were dropped."""
        return len(self.rejections)


_NOT_CONTENT = ("metadata", "slots")


def _fingerprint(record: Mapping[str, Any]) -> str:
    """What makes two tasks the same task: the record without its metadata and slots."""
    content = {k: v for k, v in record.items() if k not in _NOT_CONTENT}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def variant_id(parent_id: str, record: Mapping[str, Any]) -> str:
    """``<parent>~<8 hex of the record's content>``; a content id when that is too long."""
    candidate = f"{parent_id}~{_fingerprint(record)[:8]}"
    return candidate if len(candidate) <= MAX_TASK_ID_CHARS else content_id(record)


def _fingerprints(tasks: TaskRegistry, env_id: str) -> set[str]:
    return {_fingerprint(tasks.get(env_id, tid).record) for split in SPLITS for tid in tasks.ids(env_id, split)}


def _select(
    tasks: TaskRegistry, store: Store, env_id: str, task_ids: Sequence[str] | None,
    statuses: Sequence[str], splits: Sequence[str],
) -> list[Task]:
    if task_ids is not None:
        return [tasks.get(env_id, tid) for tid in dict.fromkeys(task_ids)]
    retired = store.retired_ids(env_id)
    return [
        tasks.get(env_id, s.task_id) for s in task_stats(tasks, store, env_id)
        if s.status in statuses and s.split in splits and s.task_id not in retired
    ]


def _mark(task: Task, set_: Mapping[str, Any] | None = None, drop: Sequence[str] = ()) -> dict[str, Any]:
    """Change a registered task's public metadata in place and return it.

    ``Task`` is frozen but its ``metadata`` is the dict the registry built for it
    (``TaskRegistry`` has no update method); one ``update`` is atomic under the GIL, and the task
    list copies it.
    """
    metadata = task.metadata
    if not isinstance(metadata, dict):  # pragma: no cover - the registry always builds a dict
        raise TypeError(f"task {task.id}: metadata is a {type(metadata).__name__}, not a dict")
    metadata.update(set_ or {})
    for key in drop:
        metadata.pop(key, None)
    return metadata


def expand(
    tasks: TaskRegistry, store: Store, env_id: str, *, task_ids: Sequence[str] | None = None,
    statuses: Sequence[str] = ("failing",), splits: Sequence[str] = ("train",), n: int = 3,
    seed: int | None = None,
) -> Expansion:
    """Grow up to ``n`` verified variants of each selected task (module doc).

    Blocking: a CodeMath check waits on math-verify worker processes; call it from a worker thread.
    """
    family = tasks.family(env_id)
    grower = expandable(family)
    parents = _select(tasks, store, family.env_id, task_ids, statuses, splits)
    result = Expansion(seed=secrets.randbits(63) if seed is None else seed)
    known = _fingerprints(tasks, family.env_id) if parents else set()
    for parent in parents:
        rng = random.Random(f"{result.seed}/{parent.id}")
        try:
            proposals = grower.variants({**copy.deepcopy(dict(parent.record)), "id": parent.id}, n, rng)
        except ValidationFailed as exc:
            log.warning("%s: no variants of %s: %s", family.env_id, parent.id, exc.message)
            proposals = []
        if not proposals:
            result.skipped.append(parent.id)
            continue
        for proposal in proposals[:n]:
            reason = _add_variant(tasks, store, family, parent, proposal, known, result)
            if reason is not None:
                result.rejections.append(Rejection(parent.id, reason))
    log.info("%s: expanded %d tasks (seed %d): %d created, %d rejected, %d skipped", family.env_id,
             len(parents), result.seed, len(result.created), result.rejected, len(result.skipped))
    return result


def _add_variant(
    tasks: TaskRegistry, store: Store, family: EnvFamily, parent: Task,
    proposal: Mapping[str, Any], known: set[str], result: Expansion,
) -> str | None:
    """Verify and register one proposed variant; the reason it was rejected, or None.

    ``known`` holds the fingerprints of the env's tasks and grows with each one added.
    """
    raw = {k: v for k, v in proposal.items() if k not in ("id", "split")}
    try:
        record = family.validate_record(raw)
    except ValidationFailed as exc:
        return f"invalid record: {exc.message}"
    new_id = variant_id(parent.id, record)
    fingerprint = _fingerprint(record)
    if fingerprint in known:
        return "duplicate: a task with the same content exists"
    try:
        tasks.get(family.env_id, new_id)
        return f"duplicate of task {new_id}"
    except TaskNotFound:
        pass
    probe = Task(env_id=family.env_id, id=new_id, split=parent.split, record=record)
    if isinstance(family, Gradable) and not family.grade(probe, family.gold_answer(record)):
        return "its gold does not earn full reward under the env's own verifier"
    try:
        tasks.register(family.env_id, [{**record, "id": new_id, "split": parent.split}])
    except DuplicateTask:  # registered meanwhile by a concurrent request
        return f"duplicate of task {new_id}"
    known.add(fingerprint)
    metadata = _mark(tasks.get(family.env_id, new_id), {"parent_id": parent.id})
    store.set_task_metadata(family.env_id, new_id, metadata)
    result.created.append(new_id)
    return None


# --- retirement --------------------------------------------------------------------------------
def retire(
    tasks: TaskRegistry, store: Store, env_id: str, *, task_ids: Sequence[str] | None = None,
    status: str | None = None, splits: Sequence[str] = ("train",),
) -> tuple[list[str], list[str]]:
    """Retire tasks by id, or every task of ``splits`` classed ``status``; returns (newly retired, already retired).

    Unknown ids are a 404 before anything changes.
    """
    family = tasks.family(env_id)
    if (task_ids is None) == (status is None):
        raise ValidationFailed("give exactly one of task_ids and status")
    if task_ids is not None:
        chosen = [tasks.get(family.env_id, tid) for tid in dict.fromkeys(task_ids)]
    else:
        chosen = [
            tasks.get(family.env_id, s.task_id) for s in task_stats(tasks, store, family.env_id)
            if s.status == status and s.split in splits
        ]
    fresh = set(store.retire_tasks(family.env_id, [t.id for t in chosen], f"status={status}" if status else None))
    for task in chosen:
        _mark(task, {"retired": True})
    return [t.id for t in chosen if t.id in fresh], [t.id for t in chosen if t.id not in fresh]


def unretire(tasks: TaskRegistry, store: Store, env_id: str, task_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Put retired tasks back in the draw; returns (un-retired, were not retired)."""
    family = tasks.family(env_id)
    chosen = [tasks.get(family.env_id, tid) for tid in dict.fromkeys(task_ids)]
    back = set(store.unretire_tasks(family.env_id, [t.id for t in chosen]))
    for task in chosen:
        _mark(task, drop=("retired",))
    return [t.id for t in chosen if t.id in back], [t.id for t in chosen if t.id not in back]


def apply_retirements(tasks: TaskRegistry, store: Store) -> int:
    """Mark the tasks the store says are retired (at startup, after tasks are loaded); returns how many.

    Retirements of tasks this server does not have are kept, unused.
    """
    count = 0
    for env_id, task_id in store.retired_pairs():
        try:
            task = tasks.get(env_id, task_id)
        except (EnvNotFound, TaskNotFound):
            continue
        _mark(task, {"retired": True})
        count += 1
    return count


# --- the judge's inputs ------------------------------------------------------------------------
def judge_case(family: EnvFamily, task: Task, response: Action) -> JudgeCase:
    """The judge's view of ``task`` and the policy's ``response``, as the family renders it.

    A family that is not ``Judgeable`` gets a 422.
    """
    view = judgeable(family).judge_view(task, response)
    return JudgeCase(messages=view.messages, tools=view.tools, label=view.label, response=view.response)
