"""A question-type x scaling-operation count table, for printing after a generation run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from toolgym.taskgen.model import QUESTION_TYPES, SCALING_OPS

__all__ = ["Stats", "stats"]

_COLUMNS = (*SCALING_OPS, "none", "tasks")


@dataclass(frozen=True)
class Stats:
    """``counts[question_type][column]``: tasks of that type with that operation applied.

    ``none``: no operation; ``tasks``: all tasks of the type. A task with two operations counts
    in both columns.
    """

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Tasks counted, over all question types."""
        return sum(row["tasks"] for row in self.counts.values())

    def format(self) -> str:
        """The table as text: a row per question type plus a total row, a column per operation."""
        rows = [*QUESTION_TYPES, "total"]
        table: dict[str, dict[str, int]] = {
            qt: self.counts.get(qt, dict.fromkeys(_COLUMNS, 0)) for qt in QUESTION_TYPES
        }
        table["total"] = {c: sum(table[qt][c] for qt in QUESTION_TYPES) for c in _COLUMNS}
        width = max(len(r) for r in rows)
        header = " ".join([" " * width] + [c.rjust(max(len(c), 6)) for c in _COLUMNS])
        lines = [header]
        for r in rows:
            cells = [str(table[r][c]).rjust(max(len(c), 6)) for c in _COLUMNS]
            lines.append(" ".join([r.ljust(width), *cells]))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def stats(records: Iterable[Mapping[str, Any]]) -> Stats:
    """Count ``records`` by ``question_type`` and by each entry of their ``scaling`` list."""
    counts: dict[str, dict[str, int]] = {qt: dict.fromkeys(_COLUMNS, 0) for qt in QUESTION_TYPES}
    for record in records:
        row = counts.setdefault(str(record.get("question_type")), dict.fromkeys(_COLUMNS, 0))
        row["tasks"] += 1
        ops = list(record.get("scaling") or [])
        for op in ops:
            if op in row:
                row[op] += 1
        if not ops:
            row["none"] += 1
    return Stats(counts)
