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

Every reply is one JSON object, parsed strictly and validated field by field; a reply that
fails validation is sent back to the model with the exact problem (``ChatClient``). The
validators never draw from ``rng``, so a retry does not change the task's other draws.
"""

from __future__ import annotations

import ast
import keyword
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from toolgym.taskgen.decompose import NoScenario
from toolgym.taskgen.deploy import row_key
from toolgym.taskgen.documents import _OUTPUTS, _RESULT_KEYS, field_param, pick_rows, unique_name
from toolgym.taskgen.integrate import merged_rows
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.llm_client import ChatClient, ReplyError
from toolgym.taskgen.model import Param, QuestionType, Scenario, Shape, SubQuestion, Toolset, ToolSpec
from toolgym.taskgen.scaling import _retype
from toolgym.taskgen.schema import check_tool_schema
from toolgym.taskgen.stages import Pipeline
from toolgym.taskgen.world import KINDS, Entity, World

__all__ = ["MAX_CODE_CHARS", "LLMStages"]

MAX_CODE_CHARS = 64_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

PREAMBLE = (
    "You are one stage of a pipeline that builds tool-use environments for training AI agents "
    "(FTRL). The user message is INPUT followed by a JSON object. Reply with exactly one JSON "
    "object in the format below and nothing else: no prose, no code fences, no comments.\n\n"
)


# --- small strict validators -----------------------------------------------------------------

def _object(value: Any, path: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplyError(f"{path} must be a JSON object")
    missing = [k for k in required if k not in value]
    if missing:
        raise ReplyError(f"{path} is missing {missing[0]!r}")
    extra = [k for k in value if k not in required and k not in optional]
    if extra:
        raise ReplyError(f"{path} has an unexpected key {extra[0]!r}; allowed: {[*required, *optional]}")
    return value


def _text(value: Any, path: str, limit: int = 2000) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ReplyError(f"{path} must be a non-empty string")
    if len(value) > limit:
        raise ReplyError(f"{path} is longer than {limit} characters")
    return value.strip()


def _identifier(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or keyword.iskeyword(value):
        raise ReplyError(f"{path} must be a Python identifier of at most 64 characters, got {value!r}")
    return value


def _list(value: Any, path: str, length: int | None = None, low: int = 0, high: int = 1000) -> list[Any]:
    if not isinstance(value, list):
        raise ReplyError(f"{path} must be a JSON array")
    if length is not None and len(value) != length:
        raise ReplyError(f"{path} must have exactly {length} item(s), it has {len(value)}")
    if not low <= len(value) <= high:
        raise ReplyError(f"{path} must have between {low} and {high} items")
    return value


def _value_text(value: Any, path: str) -> str:
    """A gold answer: a string or an integer, shown as text, never containing ", "."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ReplyError(f"{path} must be a string or an integer")
    text = str(value).strip()
    if not text or ", " in text or len(text) > 200:
        raise ReplyError(f"{path} must be a short non-empty value without ', '")
    return text


@dataclass(frozen=True)
class _Doc:
    name: str
    description: str
    key: str
    key_description: str


def _document(value: Any, path: str) -> _Doc:
    """A one-parameter OpenAI function document (stage 2 and distractors)."""
    doc = _object(value, path, ("name", "description", "parameters"))
    name = _identifier(doc["name"], f"{path}.name")
    problems = check_tool_schema({"type": "function", "function": doc})
    if problems:
        raise ReplyError(f"{path} is not a valid OpenAI function document: {problems[0]}")
    params = doc["parameters"]
    props = params["properties"]
    if len(props) != 1:
        raise ReplyError(f"{path}.parameters must have exactly one property: the entity's name")
    ((key, prop),) = props.items()
    if _identifier(key, f"{path}.parameters.properties key") == "unexpected":
        raise ReplyError(f"{path}: the parameter may not be called 'unexpected' (the code takes **unexpected)")
    if prop.get("type") != "string" or "enum" in prop or params.get("required") != [key]:
        raise ReplyError(f"{path}: the one parameter must be a required string (no enum)")
    return _Doc(name, _text(doc["description"], f"{path}.description", 500), key,
                _text(prop.get("description", f"The {key}."), f"{path}.parameters.properties.{key}.description",
                      300))


def _key_param(doc: _Doc) -> Param:
    return Param(name=doc.key, role="key", description=doc.key_description)


def _describe_attr(kind: str, attr: str) -> str:
    a = KINDS[kind].attr(attr)
    shape = f"relation: the name of a {a.target}" if a.is_ref else ("number" if a.type == "int" else "text")
    return f"{a.gloss} ({shape})"


# --- stage 1 -------------------------------------------------------------------------------

DECOMPOSE = PREAMBLE + """Stage 1, scenario decomposition. Write one question that needs the facts in INPUT.facts \
(and only those), of INPUT.question_type:
- single_hop: one lookup;
- parallel_single_hop: two or three independent lookups asked in one question;
- multi_hop: a chain of lookups, each on the entity the previous lookup returned;
- parallel_multi_hop: two such chains asked in one question.
INPUT.chains gives the number of lookups (hops) in each chain. Hop k > 0 looks up an attribute of the entity \
that hop k-1 returned, so every hop but the last uses a relation attribute. The question names only each \
chain's first entity; it never contains any hop's answer. A chain never returns to an entity it visited, and \
no two chains ask the same attribute of the same entity.
Format: {"question": "...", "chains": [[{"sub_question": "a question for this one hop", "entity": "<a name \
from INPUT.facts>", "attribute": "<an attribute key of that entity>", "answer": "<the value in INPUT.facts>"}, \
...], ...]} with one inner list per chain, hops in order."""


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


@dataclass(frozen=True)
class _Hop:
    text: str
    entity: Entity
    attr: str
    answer: str


def _shape(question_type: QuestionType, rng: random.Random, knobs: ScalingKnobs) -> list[int]:
    if question_type == "single_hop":
        return [1]
    if question_type == "parallel_single_hop":
        return [1] * (3 if rng.random() < knobs.p_three_parallel else 2)
    if question_type == "multi_hop":
        return [3 if rng.random() < knobs.p_three_hops else 2]
    return [2, 3 if rng.random() < knobs.p_three_hops else 2]


def _parse_scenario(reply: dict[str, Any], shape: list[int], catalog: Mapping[str, Entity]
                    ) -> tuple[str, list[list[_Hop]]]:
    _object(reply, "the reply", ("question", "chains"))
    question = _text(reply["question"], "question", 1500)
    chains_in = _list(reply["chains"], "chains", len(shape))
    chains: list[list[_Hop]] = []
    taken: set[tuple[str, str]] = set()
    for c, (raw, length) in enumerate(zip(chains_in, shape, strict=True)):
        hops_in = _list(raw, f"chains[{c}]", length)
        hops: list[_Hop] = []
        visited: list[str] = []
        for h, item in enumerate(hops_in):
            path = f"chains[{c}][{h}]"
            hop = _object(item, path, ("sub_question", "entity", "attribute", "answer"))
            name = _text(hop["entity"], f"{path}.entity", 200)
            entity = catalog.get(row_key(name))
            if entity is None:
                raise ReplyError(f"{path}.entity {name!r} is not a name in INPUT.facts")
            if h > 0 and row_key(entity.name) != row_key(hops[-1].answer):
                raise ReplyError(f"{path}.entity must be the answer of the hop before it ({hops[-1].answer!r})")
            if entity.name in visited:
                raise ReplyError(f"{path} returns to {entity.name!r}, which the chain already visited")
            visited.append(entity.name)
            attr = hop["attribute"]
            spec = KINDS[entity.kind]
            if not isinstance(attr, str) or attr not in spec.attr_keys:
                raise ReplyError(f"{path}.attribute must be one of {list(spec.attr_keys)} for {entity.name!r}")
            if h < length - 1 and not spec.attr(attr).is_ref:
                raise ReplyError(f"{path}.attribute must be a relation: the next hop looks up what it returns")
            if (entity.name, attr) in taken:
                raise ReplyError(f"{path} asks {attr!r} of {entity.name!r} a second time")
            taken.add((entity.name, attr))
            hops.append(_Hop(_text(hop["sub_question"], f"{path}.sub_question", 500), entity, attr,
                             _value_text(hop["answer"], f"{path}.answer")))
        chains.append(hops)
    return question, chains


# --- stage 3 and 4 reply shapes ----------------------------------------------------------------

@dataclass(frozen=True)
class _Group:
    name: str
    description: str
    members: tuple[int, ...]
    field_name: str | None


@dataclass(frozen=True)
class _Option:
    name: str
    json_type: str
    description: str
    default: Any
    choices: tuple[str, ...]


def _option(value: Any, path: str) -> _Option:
    spec = _object(value, path, ("name", "type", "description", "default"), ("enum",))
    name = _identifier(spec["name"], f"{path}.name")
    json_type = spec["type"]
    if json_type not in ("string", "integer", "boolean"):
        raise ReplyError(f"{path}.type must be string, integer or boolean")
    default = spec["default"]
    ok = {"string": isinstance(default, str), "boolean": isinstance(default, bool),
          "integer": isinstance(default, int) and not isinstance(default, bool)}[json_type]
    if not ok:
        raise ReplyError(f"{path}.default must be a {json_type}")
    choices: tuple[str, ...] = ()
    if "enum" in spec:
        if json_type != "string":
            raise ReplyError(f"{path}.enum is only for string parameters")
        items = _list(spec["enum"], f"{path}.enum", low=2, high=12)
        choices = tuple(_text(v, f"{path}.enum[]", 60) for v in items)
        if default not in choices:
            raise ReplyError(f"{path}.default must be one of its enum values")
    return _Option(name, json_type, _text(spec["description"], f"{path}.description", 300), default, choices)


INTEGRATE = PREAMBLE + """Stage 3, function integration. INPUT.documents are tool documents, one per lookup. Merge \
documents whose functionality overlaps into one tool: documents for the same attribute of the same kind must \
be merged; documents for different attributes of the same kind may be merged into one tool that takes a field \
parameter choosing the attribute; documents of different kinds are never merged.
Format: {"tools": [{"name": "<function name>", "description": "...", "documents": [<indices into \
INPUT.documents>], "field_parameter": null or {"name": "<parameter name>"}}, ...]}. Every document is in exactly \
one tool; a tool merging several attributes needs a field_parameter, a tool of one attribute has null."""

DOCUMENTS = PREAMBLE + """Stage 2, document generation. Write one tool document for each of INPUT.sub_questions, \
in the same order: a function that takes the name of an entity of the sub-question's kind and returns the \
attribute the sub-question asks about. The document is an OpenAI function schema with exactly one parameter, a \
required string naming the entity.
Format: {"tools": [{"name": "<snake_case function name>", "description": "...", "parameters": {"type": \
"object", "properties": {"<parameter name>": {"type": "string", "description": "..."}}, "required": \
["<parameter name>"]}}, ...]}"""

SCALE = PREAMBLE + """Stage 4, complexity scaling. Apply each operation named in INPUT.operations to \
INPUT.tools, and reply with one key per operation:
- "functional_generalization": widen one tool of its candidates to return any attribute of its kind (the \
  attributes are listed); give it a new name and description: {"tool": "<candidate>", "name": "<new function \
  name>", "description": "..."}.
- "parameter_expansion": give one or more of its candidate tools one to three new optional parameters that do \
  not change whether the looked-up value appears in the answer (formatting, metadata, matching, timeouts...): \
  [{"tool": "<candidate>", "parameters": [{"name": "...", "type": "string" | "integer" | "boolean", \
  "description": "...", "default": <a value of that type>, "enum": [optional, strings only]}]}].
- "type_generalization": change the type of one parameter among its candidates: {"tool": "...", "parameter": \
  "...", "type": "<one of that candidate's types>"} (enum: one of the tool's records; list: a batch, one result \
  per item; object: {"name": ...}).
- "toolset_extension": one distractor tool document per requested lookup, in order, each with exactly one \
  required string parameter naming the entity: [{"name": "...", "description": "...", "parameters": {"type": \
  "object", "properties": {"<name>": {"type": "string", "description": "..."}}, "required": ["<name>"]}}]."""

DEPLOY = PREAMBLE + """Stage 5, localized deployment. Write the Python source of INPUT.tool: one function named \
INPUT.tool.name that answers from the records in INPUT.records (embed them as literals).
Rules:
- The source is exactly one top-level `def` named INPUT.tool.name; imports, data and helpers all go inside it \
  (the code is exec'd inside another function, so module-level names would be invisible). Standard library \
  only; no files, network, clock or randomness.
- Signature: every parameter of the schema with default None, then **unexpected. Unknown arguments raise \
  TypeError; a missing required argument raises TypeError; a wrong type TypeError; a value outside its allowed \
  set ValueError; an unknown entity LookupError. Error messages name parameters, never repeat argument values.
- Entity names match case-insensitively with whitespace collapsed. INPUT.entity_parameter.shape says how the \
  name is passed: plain (a string), enum (a string from the schema's enum), list (a list of names: one result \
  per name, in order), object ({"name": ..., "kind"?: ...}).
- With a field parameter (INPUT.field_parameter), return the value of the named attribute (shape list: the \
  values of all named attributes, in order); without, return INPUT.fields[0].
- Optional parameters (INPUT.optional_parameters) take their defaults when omitted and never change whether \
  the looked-up value appears in the answer.
- The answer never contains an argument's value (no names, attribute names or option values), only what was \
  looked up. INPUT.answer_format says how to return it.
Format: {"code": "<the Python source>"}"""

_FORMATS = {
    "json": "return a dict {{\"{key}\": <the value>}} (with a list-typed parameter: {{\"{key}\": [<values in "
            "order>]}})",
    "text": "return the string 'Result: <the value>' (several values joined by '; ')",
    "plain": "return the bare value (several values: a list)",
}


# --- the stages ----------------------------------------------------------------------------------

class LLMStages:
    """The five LLM-driven stages, each matching its protocol; ``pipeline()`` strings them
    together. Thread-safe: all state is per call."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def pipeline(self) -> Pipeline:
        return Pipeline(decompose=self.decompose, write_documents=self.write_documents,
                        integrate=self.integrate, scale=self.scale, deploy=self.deploy)

    def _ask(self, stage: str, system: str, payload: dict[str, Any], validate: Callable[[dict[str, Any]], Any],
             rng: random.Random) -> Any:
        return self.client.complete_json(stage, system, {"stage": stage, **payload}, validate,
                                         seed=rng.getrandbits(31))

    # stage 1
    def decompose(self, world: World, question_type: QuestionType, rng: random.Random,
                  knobs: ScalingKnobs) -> Scenario:
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
                                     lambda r: _parse_scenario(r, shape, catalog), rng)
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
        subs = scenario.sub_questions
        payload = {"sub_questions": [
            {"index": sq.index, "text": sq.text, "kind": sq.kind, "attribute": sq.attr,
             "meaning": _describe_attr(sq.kind, sq.attr)} for sq in subs]}

        def validate(reply: dict[str, Any]) -> list[_Doc]:
            _object(reply, "the reply", ("tools",))
            items = _list(reply["tools"], "tools", len(subs))
            return [_document(item, f"tools[{i}]") for i, item in enumerate(items)]

        docs: list[_Doc] = self._ask("documents", DOCUMENTS, payload, validate, rng)
        taken: set[str] = set()
        tools = []
        for sq, doc in zip(subs, docs, strict=True):
            rows = pick_rows(world, sq.kind, [sq.entity], [sq.answer], rng.randint(*knobs.rows_per_tool), rng)
            tools.append(ToolSpec(
                name=unique_name(doc.name, taken), description=doc.description, kind=sq.kind, fields=(sq.attr,),
                params=(_key_param(doc),), rows=rows, needed=(sq.entity,), output=rng.choice(_OUTPUTS),
                result_key=rng.choice(_RESULT_KEYS)))
        return tools

    # stage 3
    def integrate(self, docs: Sequence[ToolSpec], scenario: Scenario, world: World, rng: random.Random,
                  knobs: ScalingKnobs) -> Toolset:
        if len(docs) != len(scenario.sub_questions):
            raise ValueError("integrate needs exactly one document per sub-question")
        payload = {"documents": [
            {"index": i, "name": d.name, "description": d.description, "kind": d.kind, "attribute": d.fields[0]}
            for i, d in enumerate(docs)]}

        def validate(reply: dict[str, Any]) -> list[_Group]:
            _object(reply, "the reply", ("tools",))
            groups: list[_Group] = []
            seen: dict[int, int] = {}
            names: set[str] = set()
            for g, item in enumerate(_list(reply["tools"], "tools", low=1, high=len(docs))):
                path = f"tools[{g}]"
                spec = _object(item, path, ("name", "description", "documents", "field_parameter"))
                name = _identifier(spec["name"], f"{path}.name")
                if name in names:
                    raise ReplyError(f"{path}.name {name!r} is used twice")
                names.add(name)
                members = _list(spec["documents"], f"{path}.documents", low=1, high=len(docs))
                if not all(isinstance(m, int) and not isinstance(m, bool) and 0 <= m < len(docs) for m in members):
                    raise ReplyError(f"{path}.documents must hold indices into INPUT.documents")
                for m in members:
                    if m in seen:
                        raise ReplyError(f"document {m} is in two tools")
                    seen[m] = g
                if len({docs[m].kind for m in members}) > 1:
                    raise ReplyError(f"{path} merges documents of different kinds")
                attrs = {docs[m].fields[0] for m in members}
                field = spec["field_parameter"]
                field_name = None
                if len(attrs) > 1:
                    field_name = _identifier(_object(field, f"{path}.field_parameter", ("name",))["name"],
                                             f"{path}.field_parameter.name")
                    if field_name == docs[members[0]].params[0].name:
                        raise ReplyError(f"{path}.field_parameter must not share the entity parameter's name")
                elif field is not None:
                    raise ReplyError(f"{path} covers one attribute, so its field_parameter must be null")
                groups.append(_Group(name, _text(spec["description"], f"{path}.description", 500),
                                     tuple(members), field_name))
            if len(seen) != len(docs):
                missing = next(i for i in range(len(docs)) if i not in seen)
                raise ReplyError(f"document {missing} is in no tool")
            for i in range(len(docs)):
                for j in range(i):
                    if (docs[i].kind, docs[i].fields) == (docs[j].kind, docs[j].fields) and seen[i] != seen[j]:
                        raise ReplyError(f"documents {j} and {i} look up the same attribute: merge them")
            return groups

        groups: list[_Group] = self._ask("integrate", INTEGRATE, payload, validate, rng)
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

        def validate(reply: dict[str, Any]) -> dict[str, Any]:
            _object(reply, "the reply", tuple(requested))
            out: dict[str, Any] = {}
            names = set(by_name)
            if "functional_generalization" in requested:
                fg = _object(reply["functional_generalization"], "functional_generalization",
                             ("tool", "name", "description"))
                if fg["tool"] not in requested["functional_generalization"]["candidates"]:
                    raise ReplyError("functional_generalization.tool must be one of its candidates")
                new = _identifier(fg["name"], "functional_generalization.name")
                if new in names:
                    raise ReplyError("functional_generalization.name must be a new tool name")
                names.add(new)
                out["fg"] = (fg["tool"], new, _text(fg["description"], "functional_generalization.description", 500))
            if "parameter_expansion" in requested:
                items = _list(reply["parameter_expansion"], "parameter_expansion", low=1, high=len(core))
                expansions: dict[str, list[_Option]] = {}
                for i, item in enumerate(items):
                    spec = _object(item, f"parameter_expansion[{i}]", ("tool", "parameters"))
                    if spec["tool"] not in core or spec["tool"] in expansions:
                        raise ReplyError(f"parameter_expansion[{i}].tool must be a candidate, at most once")
                    opts = [_option(o, f"parameter_expansion[{i}].parameters[{j}]")
                            for j, o in enumerate(_list(spec["parameters"], f"parameter_expansion[{i}].parameters",
                                                        low=1, high=3))]
                    taken = {p.name for p in by_name[spec["tool"]].params} | {"unexpected"}
                    for o in opts:
                        if o.name in taken:
                            raise ReplyError(f"parameter_expansion[{i}]: parameter {o.name!r} already exists")
                        taken.add(o.name)
                    expansions[spec["tool"]] = opts
                out["pe"] = expansions
            if "type_generalization" in requested:
                tg = _object(reply["type_generalization"], "type_generalization", ("tool", "parameter", "type"))
                match = [c for c in requested["type_generalization"]["candidates"]
                         if c["tool"] == tg["tool"] and c["parameter"] == tg["parameter"]]
                if not match or tg["type"] not in match[0]["types"]:
                    raise ReplyError("type_generalization must pick a candidate and one of its types")
                out["tg"] = (tg["tool"], tg["parameter"], tg["type"])
            if "toolset_extension" in requested:
                items = _list(reply["toolset_extension"], "toolset_extension", len(distractors))
                docs = [_document(item, f"toolset_extension[{i}]") for i, item in enumerate(items)]
                for doc in docs:
                    if doc.name in names:
                        raise ReplyError(f"toolset_extension: tool name {doc.name!r} is already taken")
                    names.add(doc.name)
                out["te"] = docs
            return out

        result: dict[str, Any] = self._ask("scale", SCALE, payload, validate, rng)
        return _apply_scaling(toolset, tools, result, distractors, world, rng, knobs)

    # stage 5
    def deploy(self, tool: ToolSpec, world: World, rng: random.Random) -> str:
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
            "answer_format": _FORMATS[tool.output].format(key=tool.result_key),
        }
        code: str = self._ask("deploy", DEPLOY, payload, lambda r: _check_source(r, tool.name), rng)
        return code


def _check_source(reply: dict[str, Any], name: str) -> str:
    """The reply's code, if it is one top-level ``def name``. Only parsed, never executed."""
    _object(reply, "the reply", ("code",))
    code = reply["code"]
    if not isinstance(code, str) or not code.strip():
        raise ReplyError("code must be a non-empty string")
    if len(code) > MAX_CODE_CHARS:
        raise ReplyError(f"code is longer than {MAX_CODE_CHARS} characters")
    try:
        module = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ReplyError(f"code does not parse: {type(exc).__name__}: {exc}") from None
    if len(module.body) != 1 or not isinstance(module.body[0], ast.FunctionDef) or module.body[0].name != name:
        raise ReplyError(f"code must be exactly one top-level `def {name}(...)`, with everything inside it")
    return code if code.endswith("\n") else code + "\n"


def _apply_scaling(toolset: Toolset, tools: list[ToolSpec], result: Mapping[str, Any],
                   distractors: Sequence[tuple[str, str]], world: World, rng: random.Random,
                   knobs: ScalingKnobs) -> Toolset:
    """Apply the validated choices in FTRL's order; draws from ``rng`` happen here, once."""
    assignment = list(toolset.assignment)
    ops = list(toolset.ops)
    index = {t.name: i for i, t in enumerate(tools)}
    """Positions by the names the model saw: a renamed tool keeps its position."""
    if "fg" in result:
        old_name, new_name, description = result["fg"]
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
    if "pe" in result:
        for name, opts in result["pe"].items():
            i = index[name]
            extra = tuple(Param(o.name, "option", o.description, required=False, json_type=o.json_type,
                                choices=o.choices, default=o.default) for o in opts)
            tools[i] = replace(tools[i], params=tools[i].params + extra)
        ops.append("parameter_expansion")
    if "tg" in result:
        name, pname, shape = result["tg"]
        i = index[name]
        tool = tools[i]
        target: Shape = shape
        params = tuple(_retype(p, target, tool) if p.name == pname and p.role in ("key", "field") else p
                       for p in tool.params)
        if len({p.name for p in params}) == len(params):
            tools[i] = replace(tool, params=params)
            ops.append("type_generalization")
    if "te" in result:
        low, high = knobs.rows_per_tool
        for (kind, attr), doc in zip(distractors, result["te"], strict=True):
            pool = [e.name for e in world.of(kind)]
            rows = tuple(rng.sample(pool, min(len(pool), rng.randint(low + 1, high + 1))))
            tools.append(ToolSpec(name=doc.name, description=doc.description, kind=kind, fields=(attr,),
                                  params=(_key_param(doc),), rows=rows, needed=(), output=rng.choice(_OUTPUTS),
                                  result_key=rng.choice(_RESULT_KEYS), distractor=True))
        ops.append("toolset_extension")
    return Toolset(tuple(tools), tuple(assignment), tuple(ops))
