"""FTRL's five stages driven by an LLM, each a callable matching its protocol in ``stages``.

The paper has a model write everything; here a model writes what a model is for, and the
generator keeps the bookkeeping that makes a task checkable:

1. decompose: the model writes the question, its sub-questions and their gold sub-answers
   from a catalog of the task's world; the code draws the question type and shape (knobs).
2. documents: the model writes one OpenAI tool document per sub-question; the code picks
   the records each tool embeds.
3. integrate: the model says which documents merge and names and describes the merged
   tools; the code enforces the rules (one kind per tool, same lookups always merged).
4. scale: the model writes the generalized tool, the new optional parameters, the retyped
   parameter and the distractor documents; the knobs decide which operations fire, the code
   which lookups distractors may cover.
5. deploy: the model writes the Python source of each tool; the code checks only its shape
   (one ``def`` of the right name), by parsing, never by running it.

The model works on the task's own counterfactual world (a catalog of its facts is the
input of stage 1), so facts still differ from task to task and cannot be memorized. The
model's golds are *not* checked against the world here: a wrong gold, like broken code,
is caught by the same self-verification the procedural generator uses, run in a real
sandbox (``verify_in_sandbox``). Model-written code is never executed in this process.

Three modules, one concept each: ``llm_prompts`` (what the model is told at each stage),
``llm_replies`` (what a valid reply is: every reply is one JSON object, parsed strictly and
validated field by field; a reply that fails is sent back to the model with the exact problem
by ``ChatClient``) and this one (what each stage asks, and what the code makes of the reply).
The parsers never draw from ``rng``, so a retry does not change the task's other draws.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from toolgym.taskgen.decompose import NoScenario
from toolgym.taskgen.deploy import row_key
from toolgym.taskgen.documents import _OUTPUTS, _RESULT_KEYS, field_param, pick_rows, unique_name
from toolgym.taskgen.integrate import merged_rows
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.llm_client import ChatClient
from toolgym.taskgen.llm_prompts import ANSWER_FORMATS, DECOMPOSE, DEPLOY, DOCUMENTS, INTEGRATE, SCALE
from toolgym.taskgen.llm_replies import (
    MAX_CODE_CHARS,
    Doc,
    Group,
    Scaling,
    parse_documents,
    parse_groups,
    parse_scaling,
    parse_scenario,
    parse_source,
)
from toolgym.taskgen.model import Param, QuestionType, Scenario, SubQuestion, Toolset, ToolSpec
from toolgym.taskgen.scaling import _retype
from toolgym.taskgen.stages import Pipeline
from toolgym.taskgen.world import KINDS, Entity, World

__all__ = ["MAX_CODE_CHARS", "LLMStages"]


def _describe_attr(kind: str, attr: str) -> str:
    a = KINDS[kind].attr(attr)
    shape = f"relation: the name of a {a.target}" if a.is_ref else ("number" if a.type == "int" else "text")
    return f"{a.gloss} ({shape})"


def _catalog(world: World, rng: random.Random, depth: int, seeds: int = 6, cap: int = 40) -> list[Entity]:
    """Random entities plus what their relations reach, ``depth`` steps out, at most ``cap``."""
    everyone = list(world.by_name.values())
    chosen: dict[str, Entity] = {}
    frontier = rng.sample(everyone, min(seeds, len(everyone)))
    for e in frontier:
        chosen[e.name] = e
    for _ in range(depth):
        reached: list[Entity] = []
        for e in frontier:
            for a in KINDS[e.kind].attrs:
                target = world.get(str(e.attrs[a.key])) if a.is_ref else None
                if target is not None and target.name not in chosen and len(chosen) < cap:
                    chosen[target.name] = target
                    reached.append(target)
        frontier = reached
    entities = list(chosen.values())
    rng.shuffle(entities)
    return entities


def _shape(question_type: QuestionType, rng: random.Random, knobs: ScalingKnobs) -> list[int]:
    if question_type == "single_hop":
        return [1]
    if question_type == "parallel_single_hop":
        return [1] * (3 if rng.random() < knobs.p_three_parallel else 2)
    if question_type == "multi_hop":
        return [3 if rng.random() < knobs.p_three_hops else 2]
    return [2, 3 if rng.random() < knobs.p_three_hops else 2]


class LLMStages:
    """The five LLM-driven stages, each matching its protocol; ``pipeline()`` strings them together.

    Thread-safe: all state is per call.
    """

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def pipeline(self) -> Pipeline:
        """The five stages as a ``Pipeline`` for ``build_task``."""
        return Pipeline(decompose=self.decompose, write_documents=self.write_documents,
                        integrate=self.integrate, scale=self.scale, deploy=self.deploy)

    def _ask(self, stage: str, system: str, payload: dict[str, Any], validate: Callable[[dict[str, Any]], Any],
             rng: random.Random) -> Any:
        return self.client.complete_json(stage, system, {"stage": stage, **payload}, validate,
                                         seed=rng.getrandbits(31))

    # stage 1
    def decompose(self, world: World, question_type: QuestionType, rng: random.Random,
                  knobs: ScalingKnobs) -> Scenario:
        """Stage 1: the knobs draw the shape, the model writes the question and its hops over a catalog of ``world``.

        Raises ``NoScenario`` for an empty catalog.
        """
        shape = _shape(question_type, rng, knobs)
        entities = _catalog(world, rng, depth=max(shape) - 1)
        catalog = {row_key(e.name): e for e in entities}
        if not any(KINDS[e.kind].attrs for e in entities):
            raise NoScenario("empty catalog")
        kinds = sorted({e.kind for e in entities})
        payload = {
            "question_type": question_type,
            "chains": shape,
            "facts": [{"name": e.name, "kind": e.kind, "attributes": dict(e.attrs)} for e in entities],
            "attributes": {k: {a.key: _describe_attr(k, a.key) for a in KINDS[k].attrs} for k in kinds},
        }
        question, chains = self._ask("decompose", DECOMPOSE, payload,
                                     lambda r: parse_scenario(r, shape, catalog), rng)
        order = sorted((h, c) for c, chain in enumerate(chains) for h in range(len(chain)))
        index = {pos: i for i, pos in enumerate(order)}
        subs = tuple(
            SubQuestion(index=index[(h, c)], chain=c, hop=h, kind=chains[c][h].entity.kind,
                        entity=chains[c][h].entity.name, attr=chains[c][h].attr, answer=chains[c][h].answer,
                        text=chains[c][h].text, depends_on=index[(h - 1, c)] if h > 0 else None)
            for h, c in order
        )
        return Scenario(question_type, question, subs, ", ".join(chain[-1].answer for chain in chains))

    # stage 2
    def write_documents(self, scenario: Scenario, world: World, rng: random.Random,
                        knobs: ScalingKnobs) -> list[ToolSpec]:
        """Stage 2: the model writes one document per sub-question; the code picks the rows."""
        subs = scenario.sub_questions
        payload = {"sub_questions": [
            {"index": sq.index, "text": sq.text, "kind": sq.kind, "attribute": sq.attr,
             "meaning": _describe_attr(sq.kind, sq.attr)} for sq in subs]}

        docs: list[Doc] = self._ask("documents", DOCUMENTS, payload, lambda r: parse_documents(r, len(subs)), rng)
        taken: set[str] = set()
        tools = []
        for sq, doc in zip(subs, docs, strict=True):
            rows = pick_rows(world, sq.kind, [sq.entity], [sq.answer], rng.randint(*knobs.rows_per_tool), rng)
            tools.append(ToolSpec(
                name=unique_name(doc.name, taken), description=doc.description, kind=sq.kind, fields=(sq.attr,),
                params=(doc.key_param(),), rows=rows, needed=(sq.entity,), output=rng.choice(_OUTPUTS),
                result_key=rng.choice(_RESULT_KEYS)))
        return tools

    # stage 3
    def integrate(self, docs: Sequence[ToolSpec], scenario: Scenario, world: World, rng: random.Random,
                  knobs: ScalingKnobs) -> Toolset:
        """Stage 3: the model groups the documents into tools; the code merges their rows."""
        if len(docs) != len(scenario.sub_questions):
            raise ValueError("integrate needs exactly one document per sub-question")
        payload = {"documents": [
            {"index": i, "name": d.name, "description": d.description, "kind": d.kind, "attribute": d.fields[0]}
            for i, d in enumerate(docs)]}

        groups: list[Group] = self._ask("integrate", INTEGRATE, payload, lambda r: parse_groups(r, docs), rng)
        tools: list[ToolSpec] = []
        assignment = [""] * len(docs)
        for group in groups:
            parts = [docs[m] for m in group.members]
            golds = [scenario.sub_questions[m].answer for m in group.members]
            rows, needed = merged_rows(world, parts, golds, knobs.rows_per_tool[1], rng)
            fields = tuple(dict.fromkeys(f for p in parts for f in p.fields))
            params: tuple[Param, ...] = (parts[0].params[0],)
            if group.field_name is not None:
                params += (field_param(parts[0].kind, fields, rng, name=group.field_name),)
            tools.append(ToolSpec(name=group.name, description=group.description, kind=parts[0].kind,
                                  fields=fields, params=params, rows=rows, needed=needed, output=parts[0].output,
                                  result_key=parts[0].result_key))
            for m in group.members:
                assignment[m] = group.name
        return Toolset(tuple(tools), tuple(assignment))

    # stage 4
    def scale(self, toolset: Toolset, scenario: Scenario, world: World, rng: random.Random,
              knobs: ScalingKnobs) -> Toolset:
        """Stage 4: the knobs choose the operations and the code their candidates; the model makes each choice.

        The choices are applied by ``_apply_scaling``.
        """
        tools = list(toolset.tools)
        core = [t.name for t in tools if not t.distractor]
        requested: dict[str, Any] = {}
        if rng.random() < knobs.p_functional_generalization:
            cands = [t.name for t in tools if not t.distractor and len(t.fields) < len(KINDS[t.kind].attrs)]
            if cands:
                requested["functional_generalization"] = {"candidates": cands}
        if rng.random() < knobs.p_parameter_expansion:
            requested["parameter_expansion"] = {"candidates": core}
        if rng.random() < knobs.p_type_generalization:
            tg = []
            for t in tools:
                for p in t.params:
                    if not t.distractor and p.role in ("key", "field") and p.shape == "plain":
                        types = ["enum", "object"] + (["list"] if knobs.allow_batch_lists else [])
                        tg.append({"tool": t.name, "parameter": p.name,
                                   "types": types if p.role == "key" else ["enum", "list"]})
            if tg:
                requested["type_generalization"] = {"candidates": tg}
        distractors: list[tuple[str, str]] = []
        if rng.random() < knobs.p_toolset_extension:
            covered = {(t.kind, f) for t in tools for f in t.fields}
            free = [(k, a.key) for k, spec in KINDS.items() for a in spec.attrs if (k, a.key) not in covered]
            distractors = rng.sample(free, min(rng.randint(1, knobs.max_distractors), len(free)))
            if distractors:
                requested["toolset_extension"] = {"lookups": [
                    {"kind": k, "attribute": a, "meaning": _describe_attr(k, a)} for k, a in distractors]}
        if not requested:
            return toolset
        by_name = {t.name: t for t in tools}
        payload = {
            "tools": [t.schema()["function"] | {"kind": t.kind, "attributes": list(t.fields)} for t in tools],
            "operations": requested,
            "kind_attributes": {t.kind: list(KINDS[t.kind].attr_keys) for t in tools},
        }

        def validate(reply: dict[str, Any]) -> Scaling:
            return parse_scaling(reply, requested, by_name, core, len(distractors))

        result: Scaling = self._ask("scale", SCALE, payload, validate, rng)
        return _apply_scaling(toolset, tools, result, distractors, world, rng, knobs)

    # stage 5
    def deploy(self, tool: ToolSpec, world: World, rng: random.Random) -> str:
        """Stage 5: the model writes the tool's source; it is parsed here, never run."""
        key = tool.param("key")
        fparam = tool.param("field")
        assert key is not None
        payload = {
            "tool": tool.schema()["function"],
            "entity_parameter": {"name": key.name, "shape": key.shape},
            "field_parameter": None if fparam is None else {"name": fparam.name, "shape": fparam.shape,
                                                             "allowed": list(tool.fields)},
            "fields": list(tool.fields),
            "optional_parameters": [{"name": p.name, "default": p.default} for p in tool.options],
            "records": {name: {f: world.get(name).attrs[f] for f in tool.fields} for name in tool.rows},
            "answer_format": ANSWER_FORMATS[tool.output].format(key=tool.result_key),
        }
        code: str = self._ask("deploy", DEPLOY, payload, lambda r: parse_source(r, tool.name), rng)
        return code


def _apply_scaling(toolset: Toolset, tools: list[ToolSpec], result: Scaling,
                   distractors: Sequence[tuple[str, str]], world: World, rng: random.Random,
                   knobs: ScalingKnobs) -> Toolset:
    """Apply the validated choices in FTRL's order; draws from ``rng`` happen here, once."""
    assignment = list(toolset.assignment)
    ops = list(toolset.ops)
    index = {t.name: i for i, t in enumerate(tools)}
    """Positions by the names the model saw: a renamed tool keeps its position."""
    if result.generalize is not None:
        old_name, new_name, description = result.generalize
        i = index[old_name]
        tool = tools[i]
        keys = KINDS[tool.kind].attr_keys
        old = tool.param("field")
        new = field_param(tool.kind, keys, rng, name=old.name if old else None)
        if old is None and new.name == tool.params[0].name:
            new = replace(new, name="field_name")
        params = (tuple(new if p.role == "field" else p for p in tool.params) if old is not None
                  else (tool.params[0], new, *tool.params[1:]))
        tools[i] = replace(tool, name=new_name, description=description, fields=keys, params=params)
        assignment = [new_name if n == old_name else n for n in assignment]
        ops.append("functional_generalization")
    if result.expand is not None:
        for name, opts in result.expand.items():
            i = index[name]
            extra = tuple(Param(o.name, "option", o.description, required=False, json_type=o.json_type,
                                choices=o.choices, default=o.default) for o in opts)
            tools[i] = replace(tools[i], params=tools[i].params + extra)
        ops.append("parameter_expansion")
    if result.retype is not None:
        name, pname, target = result.retype
        i = index[name]
        tool = tools[i]
        params = tuple(_retype(p, target, tool) if p.name == pname and p.role in ("key", "field") else p
                       for p in tool.params)
        if len({p.name for p in params}) == len(params):
            tools[i] = replace(tool, params=params)
            ops.append("type_generalization")
    if result.distractors is not None:
        low, high = knobs.rows_per_tool
        for (kind, attr), doc in zip(distractors, result.distractors, strict=True):
            pool = [e.name for e in world.of(kind)]
            rows = tuple(rng.sample(pool, min(len(pool), rng.randint(low + 1, high + 1))))
            tools.append(ToolSpec(name=doc.name, description=doc.description, kind=kind, fields=(attr,),
                                  params=(doc.key_param(),), rows=rows, needed=(), output=rng.choice(_OUTPUTS),
                                  result_key=rng.choice(_RESULT_KEYS), distractor=True))
        ops.append("toolset_extension")
    return Toolset(tuple(tools), tuple(assignment), tuple(ops))

