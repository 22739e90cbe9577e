"""What to evaluate: a task file's records, registered where missing, and the split chosen.

The server never reveals gold, so a task file (JSONL, as ``toolgym generate`` writes it) is
both what ``toolgym eval`` registers and where the reference policy reads its answers.
Records keep the ``id`` they have, or get one derived from their content (``record_id``),
so that a rerun registers nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolgym.client import AsyncEnvClient
from toolgym.errors import DuplicateTask

__all__ = ["EvalTask", "list_tasks", "load_task_file", "record_id", "register_tasks", "select_tasks", "task_seed"]

REGISTER_CHUNK_RECORDS = 200
REGISTER_CHUNK_BYTES = 4 * 1024 * 1024
"""Below the server's default ``max_request_bytes`` (8 MiB) with room to spare."""


@dataclass(frozen=True)
class EvalTask:
    """One task to evaluate: its id and split on the server, its question type, and maybe its record.

    The full record, gold included, is there when the task came from a task file; the reference
    policy needs it.
    """

    id: str
    split: str
    question_type: str | None = None
    record: Mapping[str, Any] | None = None


def record_id(record: Mapping[str, Any]) -> str:
    """A record's ``id``, or one derived from its content (stable across runs) when it has none."""
    if record.get("id") is not None:
        return str(record["id"])
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return "eval-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_task_file(path: str) -> list[dict[str, Any]]:
    """The records of a JSONL task file, each given its ``id`` (see ``record_id``).

    A repeated id keeps its first record. Raises ``ValueError`` naming the bad line.
    """
    records: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: a task record must be a JSON object")
            record["id"] = record_id(record)
            records.setdefault(record["id"], record)
    return list(records.values())


async def list_tasks(client: AsyncEnvClient, env_id: str, split: str | None = None) -> list[dict[str, Any]]:
    """Every task of ``env_id`` on the server (``GET /v1/envs/{env_id}/tasks``, paged).

    Each is ``{id, split, metadata}``; ``split`` narrows the listing to one split.
    """
    out: list[dict[str, Any]] = []
    while True:
        page = await client.tasks(env_id, split, offset=len(out), limit=1000)
        out.extend(page["tasks"])
        if not page["tasks"] or len(out) >= page["total"]:
            return out


def _chunks(records: Sequence[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for record in records:
        n = len(json.dumps(record, ensure_ascii=False).encode("utf-8")) + 1
        if chunk and (len(chunk) >= REGISTER_CHUNK_RECORDS or size + n > REGISTER_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += n
    if chunk:
        yield chunk


async def register_tasks(client: AsyncEnvClient, env_id: str, records: Sequence[dict[str, Any]],
                         known: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Register ``records`` (each with an ``id``) in chunks, skipping ids the server already has.

    Returns ``(registered ids, skipped ids)``.

    ``known`` are ids already listed on the server. A chunk that still meets a duplicate (a
    409 names the first one, e.g. when another client registered it meanwhile) is sent again
    without that record: registration is all-or-nothing per request, so duplicates are
    handled one record at a time.
    """
    known_ids = set(known)
    skipped = [r["id"] for r in records if r["id"] in known_ids]
    todo = [r for r in records if r["id"] not in known_ids]
    registered: list[str] = []
    for chunk in _chunks(todo):
        while chunk:
            try:
                registered.extend(await client.register_tasks(env_id, chunk))
                break
            except DuplicateTask as exc:
                dup = str(getattr(exc, "task_id", ""))
                if dup not in {r["id"] for r in chunk}:
                    raise
                skipped.append(dup)
                chunk = [r for r in chunk if r["id"] != dup]
    return registered, skipped


async def select_tasks(client: AsyncEnvClient, env_id: str, split: str,
                       records: Sequence[dict[str, Any]] | None = None,
                       say: Callable[[str], None] | None = None) -> list[EvalTask]:
    """The tasks to evaluate, registering a task file's records where missing.

    With ``records`` (a task file's, see ``load_task_file``): they are registered where missing,
    and exactly those in ``split`` are returned (a record without ``split`` is ``train``, as the
    server reads it). Without: every task the server lists in ``split``. Question types come from
    the records, else from the server's task metadata. Raises ``ValueError`` when a file task
    sits in another split on the server (an earlier record with the same id was kept).
    """
    listed = {t["id"]: t for t in await list_tasks(client, env_id)}
    if records is None:
        return [EvalTask(t["id"], t["split"], (t.get("metadata") or {}).get("question_type"))
                for t in listed.values() if t["split"] == split]
    registered, skipped = await register_tasks(client, env_id, records, known=listed)
    if say is not None:
        say(f"tasks: {len(registered)} registered, {len(skipped)} already on the server")
    if registered:
        listed.update({t["id"]: t for t in await list_tasks(client, env_id, split)})
    chosen = [r for r in records if r.get("split", "train") == split]
    moved = [r["id"] for r in chosen if r["id"] in listed and listed[r["id"]]["split"] != split]
    if moved:
        raise ValueError(f"{len(moved)} task(s) of the file are in another split on the server, e.g. {moved[0]!r}:"
                         " the server kept an earlier record with that id")
    return [EvalTask(r["id"], split, r.get("question_type")
                     or (listed.get(r["id"], {}).get("metadata") or {}).get("question_type"), r) for r in chosen]


def task_seed(seed: int, task_id: str) -> int:
    """A per-task seed: episodes do not depend on the order or concurrency they run in."""
    digest = hashlib.sha256(f"{seed}/{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1

