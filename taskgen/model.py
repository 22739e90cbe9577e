"""The data the five stages hand each other: scenarios, tool specs, reference calls.

Stage 1 turns a world into a ``Scenario`` (a question and its sub-questions). Stages 2 to 4
produce and transform ``ToolSpec`` objects: the internal, richer form of a tool from which
both its OpenAI schema (``ToolSpec.schema``) and, in stage 5, its Python source are derived.
All of these are frozen: a stage returns new objects (``dataclasses.replace``), so a stage
can be swapped (e.g. for an LLM) without the others seeing its intermediate states.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "QUESTION_TYPES",
    "SCALING_OPS",
    "Call",
    "OutputStyle",
    "Param",
    "ParamRole",
    "QuestionType",
    "Scenario",
    "Shape",
    "SubQuestion",
    "ToolSpec",
    "Toolset",
]

QuestionType = Literal["single_hop", "parallel_single_hop", "multi_hop", "parallel_multi_hop"]
QUESTION_TYPES: tuple[QuestionType, ...] = (
    "single_hop",
    "parallel_single_hop",
    "multi_hop",
    "parallel_multi_hop",
)

SCALING_OPS: tuple[str, ...] = (
    "functional_generalization",
    "parameter_expansion",
    "type_generalization",
    "toolset_extension",
)
"""FTRL's four complexity-scaling operations, in the order stage 4 applies them."""


@dataclass(frozen=True)
class SubQuestion:
    """One lookup: the value of ``attr`` of the entity ``entity`` (of kind ``kind``).

    ``chain`` and ``hop`` place it in the question: hop ``h`` of a chain takes the answer of
    hop ``h - 1`` (``depends_on``, an index into ``Scenario.sub_questions``) as its entity.
    """

    index: int
    chain: int
    hop: int
    kind: str
    entity: str
    attr: str
    answer: str
    text: str
    depends_on: int | None = None


@dataclass(frozen=True)
class Scenario:
    """Stage 1's output.

    ``sub_questions`` are in reference order: turn by turn (hop 0 of every chain, then hop 1,
    ...), chains in question order within a turn.
    """

    question_type: QuestionType
    question: str
    sub_questions: tuple[SubQuestion, ...]
    answer: str
    """The final gold answer: the last hop of each chain, in question order, joined by ", "."""

    @property
    def turns(self) -> tuple[tuple[int, ...], ...]:
        """Sub-question indices grouped by hop: the reference solution's turns, in order."""
        depth = max(sq.hop for sq in self.sub_questions) + 1
        return tuple(tuple(sq.index for sq in self.sub_questions if sq.hop == h) for h in range(depth))


ParamRole = Literal["key", "field", "option"]
"""``key`` names the entity; ``field`` picks the attribute; ``option`` changes nothing the
gold depends on (parameter expansion)."""

Shape = Literal["plain", "enum", "list", "object"]
"""How a key or field value is passed: as a string, a string from an enum, a list of
strings, or an object ``{"name": ...}`` (parameter-type generalization)."""

OutputStyle = Literal["json", "text", "plain"]
"""``json``: a dict ``{result_key: value}``; ``text``: ``"Result: <value>"``; ``plain``: the
bare value."""


@dataclass(frozen=True)
class Param:
    """One tool parameter: its ``role`` in the lookup and its ``shape`` on the wire."""
    name: str
    role: ParamRole
    description: str
    required: bool = True
    shape: Shape = "plain"
    json_type: str = "string"
    """For options: ``string``, ``integer`` or ``boolean``; keys and fields are strings."""
    choices: tuple[str, ...] = ()
    """Enum values (shape ``enum``, the items of a ``list`` field, string options), or the
    allowed fields of a ``plain`` field parameter (checked by the code, named in the text)."""
    option: str | None = None
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    kind: str | None = None
    """For an ``object`` key: the entity kind the object's optional ``kind`` must name."""

    def wrap(self, value: str) -> Any:
        """The argument value for one entity name or field name in this parameter's shape."""
        if self.shape == "list":
            return [value]
        if self.shape == "object":
            return {"name": value}
        return value

    def schema(self) -> dict[str, Any]:
        """This parameter's JSON-schema property."""
        out: dict[str, Any]
        if self.role == "option":
            out = {"type": self.json_type, "description": self.description}
            if self.choices:
                out["enum"] = list(self.choices)
            if self.minimum is not None:
                out["minimum"] = self.minimum
            if self.maximum is not None:
                out["maximum"] = self.maximum
            if self.default is not None:
                out["default"] = self.default
            return out
        if self.shape == "plain":
            return {"type": "string", "description": self.description}
        if self.shape == "enum":
            return {"type": "string", "enum": list(self.choices), "description": self.description}
        if self.shape == "list":
            items: dict[str, Any] = {"type": "string"}
            if self.role == "field":
                items["enum"] = list(self.choices)
            return {"type": "array", "items": items, "minItems": 1, "description": self.description}
        return {
            "type": "object",
            "description": self.description,
            "properties": {
                "name": {"type": "string", "description": f"The {self.kind}'s name."},
                "kind": {"type": "string", "enum": [self.kind], "description": "The record type (optional)."},
            },
            "required": ["name"],
        }


@dataclass(frozen=True)
class ToolSpec:
    """A tool: what it looks up, how it is called, how it answers, and which records its code embeds.

    In that order: ``kind`` and ``fields``; ``params``; ``output``; ``rows`` (the entities whose
    records the code embeds).
    """

    name: str
    description: str
    kind: str
    fields: tuple[str, ...]
    params: tuple[Param, ...]
    rows: tuple[str, ...]
    """Entity names embedded in the code: first those the reference calls need, then others."""
    needed: tuple[str, ...] = ()
    """The rows reference calls use (never dropped when rows are filtered)."""
    output: OutputStyle = "json"
    result_key: str = "result"
    distractor: bool = False

    def param(self, role: ParamRole) -> Param | None:
        """The first parameter with ``role``, or None."""
        for p in self.params:
            if p.role == role:
                return p
        return None

    @property
    def options(self) -> tuple[Param, ...]:
        """The optional parameters added by parameter expansion (role ``option``)."""
        return tuple(p for p in self.params if p.role == "option")

    def schema(self) -> dict[str, Any]:
        """The OpenAI function schema shown to the policy."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {p.name: p.schema() for p in self.params},
                    "required": [p.name for p in self.params if p.required],
                },
            },
        }

    def arguments(self, entity: str, attr: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The arguments of a call that asks this tool for ``attr`` of ``entity``."""
        if attr not in self.fields:
            raise ValueError(f"tool {self.name} does not return {attr!r}")
        args: dict[str, Any] = {}
        for p in self.params:
            if p.role == "key":
                args[p.name] = p.wrap(entity)
            elif p.role == "field":
                args[p.name] = p.wrap(attr)
        args.update(extra or {})
        return args


@dataclass(frozen=True)
class Toolset:
    """Stages 3 and 4's output: the task's tools, which tool answers each sub-question, and the scaling.

    ``assignment[i]`` is the tool name for sub-question ``i``; the scaling operations are those
    applied so far.
    """

    tools: tuple[ToolSpec, ...]
    assignment: tuple[str, ...]
    ops: tuple[str, ...] = ()

    def tool(self, name: str) -> ToolSpec:
        """The tool called ``name``; ``KeyError`` when there is none."""
        for t in self.tools:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def core(self) -> tuple[ToolSpec, ...]:
        """The tools that answer sub-questions, distractors left out."""
        return tuple(t for t in self.tools if not t.distractor)


@dataclass(frozen=True)
class Call:
    """One reference call: which sub-question it answers and with what arguments."""

    sub_question: int
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
