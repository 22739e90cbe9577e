"""What a valid reply is at each stage of the LLM-driven generator, checked strictly.

Every reply is one JSON object (``parse_json_reply``); the parsers here check it field by
field against what the stage asked (``llm_prompts``) and turn it into typed values for
``llm_stages``. A problem raises ``ReplyError`` with a message meant for the model: it is sent
back in a repair turn, so it names the field (``chains[0][1].entity``) and what would be
right. The parsers never draw from an ``rng``, so a repaired reply does not change the
task's other draws. Model-written code is only parsed (``ast``), never run here.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from toolgym.taskgen.deploy import row_key
from toolgym.taskgen.llm_client import ReplyError
from toolgym.taskgen.model import Param, Shape, ToolSpec
from toolgym.taskgen.schema import check_tool_schema
from toolgym.taskgen.world import KINDS, Entity

__all__ = [
    "MAX_CODE_CHARS",
    "Doc",
    "Group",
    "Hop",
    "Option",
    "Scaling",
    "parse_documents",
    "parse_groups",
    "parse_scaling",
    "parse_scenario",
    "parse_source",
]

MAX_CODE_CHARS = 64_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


# --- small strict validators ---------------------------------------------------------------------
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
class Doc:
    """A one-parameter tool document the model wrote: the tool looks up an entity by name."""

    name: str
    description: str
    key: str
    key_description: str

    def key_param(self) -> Param:
        """The document's one parameter, as the entity key of a ``ToolSpec``."""
        return Param(name=self.key, role="key", description=self.key_description)


def _document(value: Any, path: str) -> Doc:
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
    return Doc(name, _text(doc["description"], f"{path}.description", 500), key,
               _text(prop.get("description", f"The {key}."), f"{path}.parameters.properties.{key}.description",
                     300))


# --- stage 1: the scenario -----------------------------------------------------------------------
@dataclass(frozen=True)
class Hop:
    """One lookup of a chain: its sub-question, the entity, the attribute and the gold."""

    text: str
    entity: Entity
    attr: str
    answer: str


def parse_scenario(reply: dict[str, Any], shape: Sequence[int], catalog: Mapping[str, Entity]
                   ) -> tuple[str, list[list[Hop]]]:
    """Stage 1: the question and its chains of hops, ``shape[c]`` hops in chain ``c``.

    Every entity comes from ``catalog`` (by ``row_key``), each hop after the first is on the
    answer of the one before, no entity is visited twice in a chain, no lookup is asked twice.
    """
    _object(reply, "the reply", ("question", "chains"))
    question = _text(reply["question"], "question", 1500)
    chains_in = _list(reply["chains"], "chains", len(shape))
    chains: list[list[Hop]] = []
    taken: set[tuple[str, str]] = set()
    for c, (raw, length) in enumerate(zip(chains_in, shape, strict=True)):
        hops_in = _list(raw, f"chains[{c}]", length)
        hops: list[Hop] = []
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
            hops.append(Hop(_text(hop["sub_question"], f"{path}.sub_question", 500), entity, attr,
                            _value_text(hop["answer"], f"{path}.answer")))
        chains.append(hops)
    return question, chains


# --- stage 2: the documents ----------------------------------------------------------------------
def parse_documents(reply: dict[str, Any], count: int) -> list[Doc]:
    """Stage 2: exactly ``count`` tool documents, one per sub-question, in order."""
    _object(reply, "the reply", ("tools",))
    items = _list(reply["tools"], "tools", count)
    return [_document(item, f"tools[{i}]") for i, item in enumerate(items)]


# --- stage 3: the integration --------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """A tool of stage 3: its name and description, the documents it merges, its field parameter."""

    name: str
    description: str
    members: tuple[int, ...]
    field_name: str | None


def parse_groups(reply: dict[str, Any], docs: Sequence[ToolSpec]) -> list[Group]:
    """Stage 3: a partition of ``docs`` into tools, each of one kind.

    Documents of the same lookup are always together, and a tool has a field parameter exactly
    when it covers several attributes.
    """
    _object(reply, "the reply", ("tools",))
    groups: list[Group] = []
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
        groups.append(Group(name, _text(spec["description"], f"{path}.description", 500),
                            tuple(members), field_name))
    if len(seen) != len(docs):
        missing = next(i for i in range(len(docs)) if i not in seen)
        raise ReplyError(f"document {missing} is in no tool")
    for i in range(len(docs)):
        for j in range(i):
            if (docs[i].kind, docs[i].fields) == (docs[j].kind, docs[j].fields) and seen[i] != seen[j]:
                raise ReplyError(f"documents {j} and {i} look up the same attribute: merge them")
    return groups


# --- stage 4: the scaling ------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """A new optional parameter of stage 4's parameter expansion."""

    name: str
    json_type: str
    description: str
    default: Any
    choices: tuple[str, ...]


def _option(value: Any, path: str) -> Option:
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
    return Option(name, json_type, _text(spec["description"], f"{path}.description", 300), default, choices)


@dataclass(frozen=True)
class Scaling:
    """The model's choices for the operations stage 4 asked for (None: not asked)."""

    generalize: tuple[str, str, str] | None = None
    """Functional generalization: (tool, new name, new description)."""
    expand: dict[str, list[Option]] | None = None
    """Parameter expansion: the new optional parameters, by tool."""
    retype: tuple[str, str, Shape] | None = None
    """Type generalization: (tool, parameter, new shape)."""
    distractors: list[Doc] | None = None
    """Toolset extension: one document per distractor lookup, in order."""


def parse_scaling(reply: dict[str, Any], requested: Mapping[str, Any], tools: Mapping[str, ToolSpec],
                  core: Sequence[str], distractors: int) -> Scaling:
    """Stage 4: one key per operation in ``requested`` (the candidates the code offered).

    Each choice is among its candidates, every new name free. ``tools`` by name, ``core`` the
    non-distractors, ``distractors`` how many distractor documents were asked for.
    """
    _object(reply, "the reply", tuple(requested))
    generalize: tuple[str, str, str] | None = None
    retype: tuple[str, str, Shape] | None = None
    expand: dict[str, list[Option]] | None = None
    extension: list[Doc] | None = None
    names = set(tools)
    if "functional_generalization" in requested:
        fg = _object(reply["functional_generalization"], "functional_generalization",
                     ("tool", "name", "description"))
        if fg["tool"] not in requested["functional_generalization"]["candidates"]:
            raise ReplyError("functional_generalization.tool must be one of its candidates")
        new = _identifier(fg["name"], "functional_generalization.name")
        if new in names:
            raise ReplyError("functional_generalization.name must be a new tool name")
        names.add(new)
        generalize = (str(fg["tool"]), new, _text(fg["description"], "functional_generalization.description", 500))
    if "parameter_expansion" in requested:
        items = _list(reply["parameter_expansion"], "parameter_expansion", low=1, high=len(core))
        expansions: dict[str, list[Option]] = {}
        for i, item in enumerate(items):
            spec = _object(item, f"parameter_expansion[{i}]", ("tool", "parameters"))
            if spec["tool"] not in core or spec["tool"] in expansions:
                raise ReplyError(f"parameter_expansion[{i}].tool must be a candidate, at most once")
            opts = [_option(o, f"parameter_expansion[{i}].parameters[{j}]")
                    for j, o in enumerate(_list(spec["parameters"], f"parameter_expansion[{i}].parameters",
                                                low=1, high=3))]
            taken = {p.name for p in tools[spec["tool"]].params} | {"unexpected"}
            for o in opts:
                if o.name in taken:
                    raise ReplyError(f"parameter_expansion[{i}]: parameter {o.name!r} already exists")
                taken.add(o.name)
            expansions[spec["tool"]] = opts
        expand = expansions
    if "type_generalization" in requested:
        tg = _object(reply["type_generalization"], "type_generalization", ("tool", "parameter", "type"))
        match = [c for c in requested["type_generalization"]["candidates"]
                 if c["tool"] == tg["tool"] and c["parameter"] == tg["parameter"]]
        if not match or tg["type"] not in match[0]["types"]:
            raise ReplyError("type_generalization must pick a candidate and one of its types")
        retype = (str(tg["tool"]), str(tg["parameter"]), cast(Shape, tg["type"]))  # one of the candidate's
    if "toolset_extension" in requested:
        items = _list(reply["toolset_extension"], "toolset_extension", distractors)
        docs = [_document(item, f"toolset_extension[{i}]") for i, item in enumerate(items)]
        for doc in docs:
            if doc.name in names:
                raise ReplyError(f"toolset_extension: tool name {doc.name!r} is already taken")
            names.add(doc.name)
        extension = docs
    return Scaling(generalize, expand, retype, extension)


# --- stage 5: the code ---------------------------------------------------------------------------
def parse_source(reply: dict[str, Any], name: str) -> str:
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
