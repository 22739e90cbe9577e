"""One protocol per FTRL stage, and the ``Pipeline`` that strings them together.

The procedural stages of this package satisfy these protocols; an LLM-driven stage (the
paper drives every stage with an LLM) replaces one by providing a callable of the same
shape, e.g. ``Pipeline(write_documents=my_llm_writer)``. Two rules for a replacement:

- it must be deterministic given its ``rng`` (cache the model's answers keyed by a draw
  from ``rng``), or ``generate``'s byte-identical output promise no longer holds;
- a replaced ``deploy`` produces code this package did not write: ``generate`` then skips
  the in-process execution check, and the records must pass ``verify_in_sandbox``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from toolgym.taskgen.decompose import decompose
from toolgym.taskgen.deploy import deploy
from toolgym.taskgen.documents import write_documents
from toolgym.taskgen.integrate import integrate
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.model import QuestionType, Scenario, Toolset, ToolSpec
from toolgym.taskgen.scaling import scale
from toolgym.taskgen.world import World

__all__ = ["Decomposer", "Deployer", "DocumentWriter", "Integrator", "Pipeline", "Scaler"]


class Decomposer(Protocol):
    """Stage 1: a question of ``question_type`` about ``world``, split into sub-questions with gold sub-answers.

    Raises ``NoScenario`` when it cannot.
    """

    def __call__(self, world: World, question_type: QuestionType, rng: random.Random,
                 knobs: ScalingKnobs) -> Scenario:
        """Draw the scenario; raises ``NoScenario`` when the world has none of this type."""


class DocumentWriter(Protocol):
    """Stage 2: one tool document per sub-question, in sub-question order."""

    def __call__(self, scenario: Scenario, world: World, rng: random.Random,
                 knobs: ScalingKnobs) -> list[ToolSpec]:
        """One document per sub-question, in sub-question order."""


class Integrator(Protocol):
    """Stage 3: merge overlapping documents; says which tool answers each sub-question."""

    def __call__(self, docs: Sequence[ToolSpec], scenario: Scenario, world: World, rng: random.Random,
                 knobs: ScalingKnobs) -> Toolset:
        """The merged tools, with ``assignment[i]`` naming the tool for sub-question ``i``."""


class Scaler(Protocol):
    """Stage 4: the complexity-scaling operations; names the ones it applied."""

    def __call__(self, toolset: Toolset, scenario: Scenario, world: World, rng: random.Random,
                 knobs: ScalingKnobs) -> Toolset:
        """The toolset after scaling, its ``ops`` extended by the operations applied."""


class Deployer(Protocol):
    """Stage 5: the Python source of one tool, defining a function named ``tool.name``."""

    def __call__(self, tool: ToolSpec, world: World, rng: random.Random) -> str:
        """Source that defines ``tool.name``; ``world`` supplies the records the code embeds."""


@dataclass(frozen=True)
class Pipeline:
    """The five stages a task goes through; each can be replaced (the LLM-driven mode swaps them all)."""
    decompose: Decomposer = decompose
    write_documents: DocumentWriter = write_documents
    integrate: Integrator = integrate
    scale: Scaler = scale
    deploy: Deployer = deploy

    @property
    def writes_own_code(self) -> bool:
        """True when stage 5 is this package's ``deploy``.

        Only then may the generated code be executed in-process.
        """
        return self.deploy is deploy
