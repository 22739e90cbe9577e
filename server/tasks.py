"""The task registry: every env family's tasks by id and split, gold kept server-side.

Built-in tasks come from each family at startup; tasks users register go to the store too,
so they survive a restart. A record without an ``id`` gets one from its content, so
registering the same task twice is a 409, not a silent copy.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from toolgym.envs import lookup
from toolgym.envs.base import SPLITS, EnvFamily, Task
from toolgym.errors import DuplicateTask, TaskNotFound, ValidationFailed
from toolgym.server.store import Store

__all__ = ["TaskRegistry", "content_id"]

MAX_TASK_ID_CHARS = 128


def content_id(record: Mapping[str, Any]) -> str:
    """The id a record without one gets: a hash of its canonical JSON.

    The same content always gets the same id, so registering a task twice is a 409, not a copy.
    """
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return "t-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class TaskRegistry:
    """Every env family's tasks by id and split, in registration order; thread-safe.

    Gold stays in the records here: the routes expose ids and public metadata only. Tasks from
    ``register`` go to the store as well (unless ``persist`` is off), so they survive a restart.
    """

    def __init__(self, families: dict[str, EnvFamily], store: Store | None) -> None:
        self._families = families
        self._store = store
        self._tasks: dict[str, dict[str, Task]] = {env_id: {} for env_id in families}
        self._by_split: dict[str, dict[str, list[str]]] = {
            env_id: {s: [] for s in SPLITS} for env_id in families
        }
        self._lock = threading.Lock()

    def family(self, env_id: str) -> EnvFamily:
        """The family for ``env_id``; raises ``EnvNotFound`` with the closest id as a suggestion."""
        return lookup(self._families, env_id)

    def _prepare(self, family: EnvFamily, index: int, raw: Any) -> Task:
        where = f"task {index}"
        if not isinstance(raw, Mapping):
            raise ValidationFailed(f"{where}: a task record must be a JSON object", index=index)
        record = dict(raw)
        split = record.pop("split", "train")
        if split not in SPLITS:
            raise ValidationFailed(f"{where}: split must be one of {list(SPLITS)}, got {split!r}", index=index)
        task_id = record.pop("id", None)
        try:
            normalized = family.validate_record(record)
        except ValidationFailed as exc:
            raise ValidationFailed(f"{where}: {exc.message}", index=index, **exc.details) from None
        if task_id is None:
            task_id = content_id(normalized)
        if not isinstance(task_id, str | int) or isinstance(task_id, bool):
            raise ValidationFailed(f"{where}: id must be a string", index=index)
        task_id = str(task_id)
        if not task_id or len(task_id) > MAX_TASK_ID_CHARS or "/" in task_id or not task_id.isprintable():
            raise ValidationFailed(
                f"{where}: id must be 1-{MAX_TASK_ID_CHARS} printable characters without '/'", index=index
            )
        return Task(
            env_id=family.env_id, id=task_id, split=split, record=normalized,
            metadata=family.task_metadata(normalized),
        )

    def register(self, env_id: str, records: Iterable[Any], *, persist: bool = True) -> list[str]:
        """Validate all records, then add all of them, or none (422/409 name the first bad one)."""
        family = self.family(env_id)
        tasks = [self._prepare(family, i, r) for i, r in enumerate(records)]
        with self._lock:
            known = self._tasks[family.env_id]
            seen: set[str] = set()
            for task in tasks:
                if task.id in known or task.id in seen:
                    raise DuplicateTask(family.env_id, task.id)
                seen.add(task.id)
            if persist and self._store is not None:
                self._store.add_tasks(
                    family.env_id, [(t.id, t.split, dict(t.record), dict(t.metadata)) for t in tasks]
                )
            self._add(tasks)
        return [t.id for t in tasks]

    def _add(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._tasks[task.env_id][task.id] = task
            self._by_split[task.env_id][task.split].append(task.id)

    def load_builtins(self) -> int:
        """Register every family's built-in tasks (not persisted: they come back with the code); returns how many."""
        count = 0
        for env_id, family in self._families.items():
            records = []
            for split, record in family.builtin_records():
                records.append({**record, "split": split})
            count += len(self.register(env_id, records, persist=False))
        return count

    def load_persisted(self) -> int:
        """Load the tasks the store kept from earlier runs; returns how many were added.

        A task already registered (e.g. a built-in with the same id) is skipped, not a conflict.
        """
        if self._store is None:
            return 0
        count = 0
        with self._lock:
            for env_id, tid, split, record, meta in self._store.iter_tasks():
                if env_id not in self._tasks or tid in self._tasks[env_id]:
                    continue
                self._add([Task(env_id=env_id, id=tid, split=split, record=record, metadata=meta)])
                count += 1
        return count

    def get(self, env_id: str, task_id: str) -> Task:
        """The task ``task_id`` of the env; raises ``TaskNotFound`` (or ``EnvNotFound``)."""
        family = self.family(env_id)
        task = self._tasks[family.env_id].get(task_id)
        if task is None:
            raise TaskNotFound(family.env_id, task_id)
        return task

    def page(self, env_id: str, split: str | None, offset: int, limit: int) -> tuple[list[Task], int]:
        """A page of the env's tasks in registration order and the total they are a page of.

        With no ``split``, the splits follow one another in ``SPLITS`` order.
        """
        family = self.family(env_id)
        if split is not None and split not in SPLITS:
            raise ValidationFailed(f"split must be one of {list(SPLITS)}, got {split!r}")
        with self._lock:
            if split is None:
                ids = [tid for s in SPLITS for tid in self._by_split[family.env_id][s]]
            else:
                ids = list(self._by_split[family.env_id][split])
        tasks = self._tasks[family.env_id]
        return [tasks[tid] for tid in ids[offset : offset + limit]], len(ids)

    def ids(self, env_id: str, split: str) -> list[str]:
        """A copy of the task ids of ``split``; ``env_id`` must be the canonical id (no lookup here)."""
        with self._lock:
            return list(self._by_split[env_id][split])

    def sample(self, env_id: str, split: str, rng: random.Random) -> Task:
        """A uniform draw from ``split``; deterministic for a seeded ``rng``."""
        ids = self.ids(env_id, split)
        if not ids:
            raise ValidationFailed(
                f"env {env_id!r} has no {split} tasks; register some with POST /v1/envs/{env_id}/tasks"
            )
        return self._tasks[env_id][rng.choice(ids)]

    def counts(self, env_id: str) -> dict[str, int]:
        """The number of tasks per split; ``env_id`` must be the canonical id (no lookup here)."""
        with self._lock:
            return {s: len(v) for s, v in self._by_split[env_id].items()}
