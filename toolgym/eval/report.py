"""The table: FTRL's Solve-P/R/F1 per question type and overall, with the mean return.

Each figure is the mean, over the scored episodes, of the final step's
``info["metrics"]`` (``solve_precision``, ``solve_rate``, ``solve_f1``, as the ToolUse env
reports them); failed episodes are counted in their own column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from toolgym.eval.runner import EpisodeResult

__all__ = ["METRICS", "QUESTION_TYPES", "Row", "format_table", "summarize"]

QUESTION_TYPES = ("single_hop", "parallel_single_hop", "multi_hop", "parallel_multi_hop")
"""FTRL's four question types (arXiv 2508.08791), always shown in the table, in this order."""
METRICS = ("solve_precision", "solve_rate", "solve_f1")
"""Solve-P, Solve-R and Solve-F1, by the names the ToolUse env reports them under."""


@dataclass(frozen=True)
class Row:
    """One line of the table: means over the scored episodes of one question type."""

    label: str
    episodes: int
    errors: int
    solve_precision: float | None
    solve_rate: float | None
    solve_f1: float | None
    mean_return: float | None


def _row(label: str, results: Sequence[EpisodeResult]) -> Row:
    scored = [r for r in results if r.error is None]
    n = len(scored)

    def mean(values: Iterable[float]) -> float | None:
        return sum(values) / n if n else None

    return Row(
        label=label, episodes=n, errors=len(results) - n,
        solve_precision=mean(float(r.metrics.get("solve_precision", 0.0)) for r in scored),
        solve_rate=mean(float(r.metrics.get("solve_rate", 0.0)) for r in scored),
        solve_f1=mean(float(r.metrics.get("solve_f1", 0.0)) for r in scored),
        mean_return=mean(r.total_reward for r in scored),
    )


def summarize(results: Sequence[EpisodeResult], question_types: Sequence[str] = QUESTION_TYPES) -> list[Row]:
    """A row per question type (the given ones always, then any others seen), then ``overall``."""
    labels = list(question_types)
    for r in results:
        label = r.question_type or "unknown"
        if label not in labels:
            labels.append(label)
    rows = [_row(label, [r for r in results if (r.question_type or "unknown") == label]) for label in labels]
    return [*rows, _row("overall", results)]


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: Solve-P/R/F1 (FTRL's metrics), mean return, episodes, errors."""
    header = ("question_type", "episodes", "Solve-P", "Solve-R", "Solve-F1", "return", "errors")
    width = max(len(header[0]), *(len(r.label) for r in rows))

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{header[0]:<{width}}  " + "  ".join(f"{h:>8}" for h in header[1:])]
    lines.append("-" * len(lines[0]))
    for r in rows:
        if r.label == "overall":
            lines.append("-" * len(lines[0]))
        cells = (str(r.episodes), num(r.solve_precision), num(r.solve_rate), num(r.solve_f1), num(r.mean_return),
                 str(r.errors))
        lines.append(f"{r.label:<{width}}  " + "  ".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)

