"""Stage 4, complexity scaling: FTRL's four operations.

Each is fired with its knob's probability (``ScalingKnobs``) once per task, in this order:

1. functional generalization: one tool is widened to cover *every* attribute of its kind
   (``get_company_founder(company)`` -> ``get_company_profile(company, field)``);
2. parameter expansion: some tools gain one to three optional parameters
   (``response_format``, ``include_metadata``, ``strict_match``, ``timeout_s``,
   ``language``); omitted, each has a documented default, and none changes whether the
   gold appears in the output;
3. parameter-type generalization: one parameter changes type: a string becomes an enum,
   a list (a batch of names or of fields) or an object (``{"name": ...}``);
4. toolset extension: one to ``max_distractors`` distractor tools are added, each looking
   up an attribute no core tool covers (a distractor that could answer a sub-question
   would hold a gold the ``unsolved_set`` does not credit).

An operation that does not apply (every tool already general, say) is skipped and not
recorded. The result names the operations applied, for the record's ``scaling`` field.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from toolgym.taskgen.documents import LEADS, field_param, single_tool, unique_name
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.model import Param, Scenario, Shape, Toolset, ToolSpec
from toolgym.taskgen.world import KINDS, World

__all__ = ["OPTION_NAMES", "make_option", "reference_option_value", "scale"]

OPTION_NAMES = ("response_format", "include_metadata", "strict_match", "timeout_s", "language")
_GENERAL_SUFFIXES = ("details", "profile", "overview")


def make_option(name: str, tool: ToolSpec) -> Param:
    """One optional parameter of the expansion pool."""
    if name == "response_format":
        return Param(name, "option", "Shape of the answer: json (an object), text (a sentence) or plain "
                     "(the bare value).", required=False, choices=("json", "text", "plain"),
                     option=name, default=tool.output)
    if name == "include_metadata":
        return Param(name, "option", "Also return the record's id and data source (json and text answers).",
                     required=False, json_type="boolean", option=name, default=False)
    if name == "strict_match":
        return Param(name, "option", "Require the full name (case-insensitive); false also accepts an "
                     "unambiguous prefix of it.", required=False, json_type="boolean", option=name,
                     default=True)
    if name == "timeout_s":
        return Param(name, "option", "Seconds to wait for the registry before giving up.", required=False,
                     json_type="integer", option=name, default=10, minimum=1, maximum=60)
    if name == "language":
        return Param(name, "option", "Language of the labels in the answer.", required=False,
                     choices=("en", "en-GB", "en-US"), option=name, default="en")
    raise ValueError(f"unknown option {name!r}")


def reference_option_value(param: Param, rng: random.Random) -> Any:
    """A value a reference call may pass for an optional parameter.

    Any of them keeps the gold in the output.
    """
    if param.option == "response_format" or param.option == "language":
        return rng.choice(param.choices)
    if param.option == "include_metadata" or param.option == "strict_match":
        return rng.random() < 0.5
    if param.option == "timeout_s":
        return rng.randint(5, 30)
    raise ValueError(f"unknown option {param.option!r}")


def _add_options(tool: ToolSpec, count: int, rng: random.Random) -> ToolSpec:
    present = {p.name for p in tool.params}
    free = [n for n in OPTION_NAMES if n not in present]
    picked = rng.sample(free, min(count, len(free)))
    return replace(tool, params=tool.params + tuple(make_option(n, tool) for n in picked))


def _functional_generalization(tools: list[ToolSpec], assignment: list[str], rng: random.Random,
                               taken: set[str]) -> bool:
    candidates = [i for i, t in enumerate(tools)
                  if not t.distractor and len(t.fields) < len(KINDS[t.kind].attrs)]
    if not candidates:
        return False
    i = rng.choice(candidates)
    tool = tools[i]
    spec = KINDS[tool.kind]
    old = tool.param("field")
    new = field_param(tool.kind, spec.attr_keys, rng, name=old.name if old else None)
    if old is not None:
        params = tuple(new if p.role == "field" else p for p in tool.params)
    else:
        params = (tool.params[0], new, *tool.params[1:])
    verb = tool.name.split("_")[0]
    name = unique_name(f"{verb}_{tool.kind}_{rng.choice(_GENERAL_SUFFIXES)}", taken)
    labels = ", ".join(a.label for a in spec.attrs)
    tools[i] = replace(
        tool, name=name, fields=spec.attr_keys, params=params,
        description=f"{rng.choice(LEADS)} any attribute of a {spec.noun} by name: {labels}.",
    )
    assignment[:] = [name if n == tool.name else n for n in assignment]
    return True


def _parameter_expansion(tools: list[ToolSpec], rng: random.Random) -> bool:
    core = [i for i, t in enumerate(tools) if not t.distractor]
    chosen = [i for i in core if rng.random() < 0.5] or [rng.choice(core)]
    for i in chosen:
        tools[i] = _add_options(tools[i], rng.randint(1, 3), rng)
    return True


def _plural(name: str) -> str:
    return name[:-1] + "ies" if name.endswith("y") else name + "s"


def _retype(param: Param, shape: Shape, tool: ToolSpec) -> Param:
    """``param`` in its new shape; a list parameter gets a plural name."""
    noun = KINDS[tool.kind].noun
    if shape == "list":
        param = replace(param, name=_plural(param.name))
    if param.role == "key":
        if shape == "enum":
            return replace(param, shape="enum", choices=tuple(sorted(tool.rows)),
                           description=f"The {noun}, one of the records this tool holds.")
        if shape == "list":
            return replace(param, shape="list", description=f"Names of the {noun} records to look up; "
                           "one result per name, in order.")
        return replace(param, shape="object", kind=tool.kind,
                       description=f"The {noun} to look up, as an object with its name.")
    if shape == "enum":
        return replace(param, shape="enum", description="Which attribute to return.")
    return replace(param, shape="list",
                   description="Which attributes to return; one value per attribute, in order.")


def _type_generalization(tools: list[ToolSpec], rng: random.Random, knobs: ScalingKnobs) -> bool:
    candidates: list[tuple[int, str, Shape]] = []
    for i, t in enumerate(tools):
        if t.distractor:
            continue
        key = t.param("key")
        if key is not None and key.shape == "plain":
            shapes: list[Shape] = ["enum", "object"]
            if knobs.allow_batch_lists:
                shapes.append("list")
            candidates += [(i, "key", s) for s in shapes]
        fp = t.param("field")
        if fp is not None and fp.shape == "plain":
            candidates += [(i, "field", "enum"), (i, "field", "list")]
    if not candidates:
        return False
    i, role, shape = rng.choice(candidates)
    tool = tools[i]
    params = tuple(_retype(p, shape, tool) if p.role == role else p for p in tool.params)
    tools[i] = replace(tool, params=params)
    return True


def _toolset_extension(tools: list[ToolSpec], world: World, rng: random.Random, knobs: ScalingKnobs,
                       taken: set[str]) -> bool:
    covered = {(t.kind, f) for t in tools for f in t.fields}
    candidates = [(k, a.key) for k, spec in KINDS.items() for a in spec.attrs if (k, a.key) not in covered]
    if not candidates:
        return False
    low, high = knobs.rows_per_tool
    for kind, attr in rng.sample(candidates, min(rng.randint(1, knobs.max_distractors), len(candidates))):
        pool = [e.name for e in world.of(kind)]
        rows = tuple(rng.sample(pool, min(len(pool), rng.randint(low + 1, high + 1))))
        tool = single_tool(kind, attr, rows, (), rng, taken, distractor=True)
        if rng.random() < 0.3:
            # Options on distractors too, so optional parameters do not single out the core tools.
            tool = _add_options(tool, rng.randint(1, 2), rng)
        tools.append(tool)
    return True


def scale(toolset: Toolset, scenario: Scenario, world: World, rng: random.Random,
          knobs: ScalingKnobs) -> Toolset:
    """Apply the scaling operations (the ``Scaler`` protocol)."""
    tools = list(toolset.tools)
    assignment = list(toolset.assignment)
    taken = {t.name for t in tools}
    ops = list(toolset.ops)
    if (rng.random() < knobs.p_functional_generalization
            and _functional_generalization(tools, assignment, rng, taken)):
        ops.append("functional_generalization")
    if rng.random() < knobs.p_parameter_expansion and _parameter_expansion(tools, rng):
        ops.append("parameter_expansion")
    if rng.random() < knobs.p_type_generalization and _type_generalization(tools, rng, knobs):
        ops.append("type_generalization")
    if rng.random() < knobs.p_toolset_extension and _toolset_extension(tools, world, rng, knobs, taken):
        ops.append("toolset_extension")
    return Toolset(tuple(tools), tuple(assignment), tuple(ops))
