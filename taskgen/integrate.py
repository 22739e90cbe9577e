"""Stage 3, function integration: merge tools whose functionality overlaps.

Two rules, applied per entity kind in order of first appearance:

- documents for the *same* attribute of the same kind are one tool, always (a parallel
  question about the populations of two cities needs one ``get_city_population``, called
  twice: its ``unsolved_set`` entry then holds two golds);
- documents for *different* attributes of the same kind become one tool with a ``field``
  argument, with probability ``knobs.p_merge_same_kind`` (``get_city_info(city, field)``).

A merged tool embeds the union of its parts' records, minus any extra record that would
also produce one of its golds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from toolgym.taskgen.documents import LEADS, collides, field_param, unique_name
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.model import Scenario, SubQuestion, Toolset, ToolSpec
from toolgym.taskgen.world import KINDS, World

__all__ = ["integrate", "merged_rows"]

_MERGED_SUFFIXES = ("info", "record", "facts", "attributes")


def merged_rows(world: World, parts: Sequence[ToolSpec], golds: Sequence[str], cap: int,
                rng: random.Random) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(rows, needed) of a tool made of ``parts``.

    Every needed record, then up to ``cap`` others that produce none of ``golds``, shuffled.
    """
    needed = tuple(dict.fromkeys(n for p in parts for n in p.needed))
    extras = [r for p in parts for r in p.rows if r not in needed]
    extras = [r for r in dict.fromkeys(extras) if not collides(world, r, golds)][:cap]
    rows = list(needed) + extras
    rng.shuffle(rows)
    return tuple(rows), needed


def _merge(parts: list[ToolSpec], subs: list[SubQuestion], world: World, rng: random.Random,
           knobs: ScalingKnobs, taken: set[str]) -> ToolSpec:
    first = parts[0]
    golds = [sq.answer for sq in subs]
    rows, needed = merged_rows(world, parts, golds, knobs.rows_per_tool[1], rng)
    fields = tuple(dict.fromkeys(f for p in parts for f in p.fields))
    if len(fields) == 1:
        return ToolSpec(
            name=unique_name(first.name, taken), description=first.description, kind=first.kind,
            fields=fields, params=first.params, rows=rows, needed=needed, output=first.output,
            result_key=first.result_key,
        )
    spec = KINDS[first.kind]
    key = first.param("key")
    assert key is not None
    verb = first.name.split("_")[0]
    labels = ", ".join(spec.attr(f).label for f in fields)
    return ToolSpec(
        name=unique_name(f"{verb}_{first.kind}_{rng.choice(_MERGED_SUFFIXES)}", taken),
        description=f"{rng.choice(LEADS)} one attribute of a {spec.noun} by name: {labels}.",
        kind=first.kind,
        fields=fields,
        params=(key, field_param(first.kind, fields, rng)),
        rows=rows,
        needed=needed,
        output=first.output,
        result_key=first.result_key,
    )


def integrate(docs: Sequence[ToolSpec], scenario: Scenario, world: World, rng: random.Random,
              knobs: ScalingKnobs) -> Toolset:
    """Merge overlapping documents (the ``Integrator`` protocol).

    ``docs[i]`` is the document of ``scenario.sub_questions[i]``.
    """
    if len(docs) != len(scenario.sub_questions):
        raise ValueError("integrate needs exactly one document per sub-question")
    taken: set[str] = set()
    tools: list[ToolSpec] = []
    assignment = [""] * len(docs)
    for kind in dict.fromkeys(d.kind for d in docs):
        idx = [i for i, d in enumerate(docs) if d.kind == kind]
        attrs = list(dict.fromkeys(docs[i].fields[0] for i in idx))
        if len(attrs) > 1 and rng.random() < knobs.p_merge_same_kind:
            groups = [idx]
        else:
            groups = [[i for i in idx if docs[i].fields[0] == a] for a in attrs]
        for group in groups:
            tool = _merge([docs[i] for i in group], [scenario.sub_questions[i] for i in group],
                          world, rng, knobs, taken)
            tools.append(tool)
            for i in group:
                assignment[i] = tool.name
    return Toolset(tuple(tools), tuple(assignment))
