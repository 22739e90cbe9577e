"""The generator's knobs: question-type mix and FTRL's complexity-scaling probabilities.

Each scaling operation is one probability, drawn once per task: when it fires, the
operation is applied to the task (to one or more of its tools) and named in the record's
``scaling`` list. The defaults give every operation in a sizeable share of tasks while
leaving a fair number of plain tasks, so a curriculum can start from the simple ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from toolgym.taskgen.model import QUESTION_TYPES

__all__ = ["FUNCTION_CALL_KNOBS", "ScalingKnobs"]


def _even_mix() -> dict[str, float]:
    return {qt: 1.0 for qt in QUESTION_TYPES}


@dataclass(frozen=True)
class ScalingKnobs:
    """Every probability and weight the generator draws from; the defaults give an even mix of question types."""
    question_weights: Mapping[str, float] = field(default_factory=_even_mix)
    """Relative weight of each question type (``single_hop``, ``parallel_single_hop``,
    ``multi_hop``, ``parallel_multi_hop``); default an even mix."""

    p_functional_generalization: float = 0.3
    """A tool is widened to cover every attribute of its entity kind (a ``field`` argument)."""
    p_parameter_expansion: float = 0.4
    """Tools gain one to three optional parameters (format, metadata, matching, timeout...)."""
    p_type_generalization: float = 0.3
    """One parameter changes type: string -> enum, string -> list, string -> object."""
    p_toolset_extension: float = 0.5
    """One to ``max_distractors`` distractor tools are added."""
    max_distractors: int = 3

    p_merge_same_kind: float = 0.8
    """Stage 3: lookups of different attributes of the same kind become one tool with a
    ``field`` argument (exact duplicates are always merged)."""
    p_three_hops: float = 0.3
    """A multi-hop chain has three hops instead of two."""
    p_three_parallel: float = 0.3
    """A parallel single-hop question has three parts instead of two."""
    p_optional_in_reference: float = 0.5
    """A reference call also passes one optional parameter (with a value that keeps the gold)."""
    allow_batch_lists: bool = True
    """Type generalization may turn the entity argument into a list (a batch lookup). FTRL
    credits at most one gold per call, so the reference makes one call per entity."""
    rows_per_tool: tuple[int, int] = (4, 8)
    """How many records besides the needed ones a tool's code embeds (inclusive range)."""

    def __post_init__(self) -> None:
        for name in ("p_functional_generalization", "p_parameter_expansion", "p_type_generalization",
                     "p_toolset_extension", "p_merge_same_kind", "p_three_hops", "p_three_parallel",
                     "p_optional_in_reference"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        unknown = sorted(k for k in self.question_weights if k not in QUESTION_TYPES)
        if unknown:
            raise ValueError(f"unknown question type(s) {unknown}; known: {list(QUESTION_TYPES)}")
        if any(w < 0 for w in self.question_weights.values()) or sum(self.question_weights.values()) <= 0:
            raise ValueError("question_weights must be non-negative with a positive sum")
        if self.max_distractors < 1:
            raise ValueError("max_distractors must be >= 1")
        low, high = self.rows_per_tool
        if not 0 <= low <= high:
            raise ValueError("rows_per_tool must be a range (low, high) with 0 <= low <= high")

    def weights(self) -> list[float]:
        """Question-type weights in ``QUESTION_TYPES`` order (deterministic)."""
        return [float(self.question_weights.get(qt, 0.0)) for qt in QUESTION_TYPES]


FUNCTION_CALL_KNOBS = replace(
    ScalingKnobs(),
    question_weights={"single_hop": 1.0, "parallel_single_hop": 1.0},
    p_optional_in_reference=0.0,
    allow_batch_lists=False,
)
"""Knobs for single-step FunctionCall tasks: first-turn questions only; gold calls carry no
optional argument and no batch list, because LoopTool's exact match would then demand a
choice the question does not determine."""
