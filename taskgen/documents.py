"""Stage 2, document generation: one tool document per sub-question.

A document is a ``ToolSpec``: name, description, parameters (whose OpenAI schema
``ToolSpec.schema`` renders) and the slice of the world its code will embed. A sub-question
"the founder of company X" gets ``get_company_founder(company_name)``; its slice is X's
record plus a few other companies, so the tool reads like a small database rather than a
function that can only answer one question.

The helpers here (names, row slices, field parameters) are shared by stages 3 and 4.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from toolgym.taskgen.ftrl import normalize
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.model import OutputStyle, Param, Scenario, SubQuestion, ToolSpec
from toolgym.taskgen.world import KINDS, World

__all__ = [
    "collides",
    "field_param",
    "key_param",
    "pick_rows",
    "single_tool",
    "unique_name",
    "write_documents",
]

VERBS = ("get", "lookup", "find", "fetch", "query", "retrieve")
LEADS = ("Look up", "Return", "Get", "Find", "Retrieve")
_OUTPUTS: tuple[OutputStyle, ...] = ("json", "json", "text", "plain")
_RESULT_KEYS = ("result", "value", "data")


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``... : tool names are unique within a task."""
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def key_param(kind: str, rng: random.Random) -> Param:
    """The parameter that names the entity a tool looks up, with a name drawn from the kind's choices."""
    noun = KINDS[kind].noun
    what = "title" if kind == "book" else "name"
    return Param(
        name=rng.choice(KINDS[kind].key_params),
        role="key",
        description=f"The {noun}'s {what}, as written in the question (case does not matter).",
    )


def field_param(kind: str, fields: Sequence[str], rng: random.Random, name: str | None = None) -> Param:
    """A ``field`` argument choosing one of ``fields``.

    A plain string whose allowed values the description names (stage 4 may turn it into an enum
    or a list).
    """
    spec = KINDS[kind]
    listing = "; ".join(f"{f} ({spec.attr(f).gloss})" for f in fields)
    return Param(
        name=name or rng.choice(("field", "attribute", "property")),
        role="field",
        description=f"Which attribute to return. One of: {listing}.",
        choices=tuple(fields),
    )


def collides(world: World, name: str, golds: Iterable[str]) -> bool:
    """Whether any attribute of entity ``name`` contains one of ``golds`` (normalized, as FTRL's check compares).

    Such a record must not sit in a tool: a call on it would be credited with a gold.
    """
    cells = [normalize(str(v)) for v in world.get(name).attrs.values()]
    return any(normalize(g) in cell for g in golds for cell in cells)


def pick_rows(world: World, kind: str, needed: Sequence[str], golds: Sequence[str], extra: int,
              rng: random.Random) -> tuple[str, ...]:
    """``needed`` plus up to ``extra`` other entities of ``kind`` none of whose attributes contains a gold.

    Only the record the question is about may produce its answer.
    """
    needed_list = list(dict.fromkeys(needed))
    pool = [e.name for e in world.of(kind)
            if e.name not in needed_list and not collides(world, e.name, golds)]
    chosen = needed_list + rng.sample(pool, min(extra, len(pool)))
    rng.shuffle(chosen)
    return tuple(chosen)


def describe_single(kind: str, attr: str, rng: random.Random) -> str:
    spec = KINDS[kind]
    a = spec.attr(attr)
    what = "title" if kind == "book" else "name"
    return f"{rng.choice(LEADS)} the {a.label} of a {spec.noun} ({a.gloss}), given the {spec.noun}'s {what}."


def single_tool(kind: str, attr: str, rows: tuple[str, ...], needed: tuple[str, ...], rng: random.Random,
                taken: set[str], *, distractor: bool = False) -> ToolSpec:
    """A one-attribute lookup tool: ``<verb>_<kind>_<attr>(<key>)``."""
    return ToolSpec(
        name=unique_name(f"{rng.choice(VERBS)}_{kind}_{attr}", taken),
        description=describe_single(kind, attr, rng),
        kind=kind,
        fields=(attr,),
        params=(key_param(kind, rng),),
        rows=rows,
        needed=needed,
        output=rng.choice(_OUTPUTS),
        result_key=rng.choice(_RESULT_KEYS),
        distractor=distractor,
    )


def _document(sq: SubQuestion, world: World, rng: random.Random, knobs: ScalingKnobs,
              taken: set[str]) -> ToolSpec:
    extra = rng.randint(*knobs.rows_per_tool)
    rows = pick_rows(world, sq.kind, [sq.entity], [sq.answer], extra, rng)
    return single_tool(sq.kind, sq.attr, rows, (sq.entity,), rng, taken)


def write_documents(scenario: Scenario, world: World, rng: random.Random,
                    knobs: ScalingKnobs) -> list[ToolSpec]:
    """One document per sub-question, in sub-question order (the ``DocumentWriter`` protocol).

    Two sub-questions about the same attribute get two documents here; stage 3 merges them.
    """
    taken: set[str] = set()
    return [_document(sq, world, rng, knobs, taken) for sq in scenario.sub_questions]
