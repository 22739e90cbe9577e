"""Each FTRL stage on its own: decomposition, documents, integration, scaling, deployment."""

from __future__ import annotations

import builtins
import random
from dataclasses import replace
from typing import Any

import pytest

from toolgym.taskgen.decompose import decompose
from toolgym.taskgen.deploy import deploy
from toolgym.taskgen.documents import write_documents
from toolgym.taskgen.integrate import integrate
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.model import QUESTION_TYPES, Scenario, Toolset, ToolSpec
from toolgym.taskgen.scaling import make_option, scale
from toolgym.taskgen.stages import Pipeline
from toolgym.taskgen.world import KINDS, World

NO_SCALING = ScalingKnobs(p_functional_generalization=0.0, p_parameter_expansion=0.0,
                          p_type_generalization=0.0, p_toolset_extension=0.0)


def _scenario(seed: int, question_type: str, knobs: ScalingKnobs = NO_SCALING) -> tuple[World, Scenario]:
    rng = random.Random(seed)
    world = World.build(rng)
    return world, decompose(world, question_type, rng, knobs)  # type: ignore[arg-type]


def _function(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {"__builtins__": builtins}
    exec(compile(source, name, "exec"), namespace)
    return namespace[name]


# --- stage 1 -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("question_type", QUESTION_TYPES)
def test_decomposition_has_the_shape_of_its_type(seed: int, question_type: str) -> None:
    world, sc = _scenario(seed, question_type)
    chains = sorted({sq.chain for sq in sc.sub_questions})
    hops = [max(sq.hop for sq in sc.sub_questions if sq.chain == c) + 1 for c in chains]
    expected = {
        "single_hop": lambda: len(chains) == 1 and hops == [1],
        "parallel_single_hop": lambda: len(chains) in (2, 3) and set(hops) == {1},
        "multi_hop": lambda: len(chains) == 1 and hops[0] in (2, 3),
        "parallel_multi_hop": lambda: len(chains) == 2 and all(h >= 2 for h in hops),
    }[question_type]
    assert expected(), (question_type, hops)
    # Each hop asks about the entity the previous hop answered, and the world agrees.
    for sq in sc.sub_questions:
        assert str(world.get(sq.entity).attrs[sq.attr]) == sq.answer
        if sq.depends_on is not None:
            assert sq.entity == sc.sub_questions[sq.depends_on].answer
            assert sq.hop == sc.sub_questions[sq.depends_on].hop + 1
        else:
            assert sq.hop == 0 and sq.entity in sc.question
    last = [max((sq for sq in sc.sub_questions if sq.chain == c), key=lambda s: s.hop) for c in chains]
    assert sc.answer == ", ".join(sq.answer for sq in last)
    assert [sq.index for sq in sc.sub_questions] == list(range(len(sc.sub_questions)))
    assert [i for turn in sc.turns for i in turn] == list(range(len(sc.sub_questions)))


# --- stages 2 and 3 --------------------------------------------------------------------------

def test_one_document_per_sub_question_embedding_the_needed_record() -> None:
    world, sc = _scenario(3, "parallel_multi_hop")
    docs = write_documents(sc, world, random.Random(0), NO_SCALING)
    assert len(docs) == len(sc.sub_questions)
    for doc, sq in zip(docs, sc.sub_questions, strict=True):
        assert doc.kind == sq.kind and doc.fields == (sq.attr,) and sq.entity in doc.rows
        assert doc.param("key") is not None and doc.param("field") is None


def _find_scenario(predicate: Any) -> tuple[World, Scenario]:
    for seed in range(500):
        world, sc = _scenario(seed, "parallel_single_hop")
        if predicate(sc):
            return world, sc
    raise AssertionError("no scenario found")


def test_integration_merges_same_kind_lookups_into_a_field_tool() -> None:
    def same_kind_two_attrs(sc: Scenario) -> bool:
        subs = sc.sub_questions
        return len(subs) == 2 and subs[0].kind == subs[1].kind and subs[0].attr != subs[1].attr

    world, sc = _find_scenario(same_kind_two_attrs)
    docs = write_documents(sc, world, random.Random(0), NO_SCALING)
    merged = integrate(docs, sc, world, random.Random(0), replace(NO_SCALING, p_merge_same_kind=1.0))
    assert len(merged.tools) == 1 and merged.assignment == (merged.tools[0].name,) * 2
    tool = merged.tools[0]
    field = tool.param("field")
    assert field is not None and set(field.choices) == {sq.attr for sq in sc.sub_questions}
    kept = integrate(docs, sc, world, random.Random(0), replace(NO_SCALING, p_merge_same_kind=0.0))
    assert len(kept.tools) == 2


def test_integration_always_merges_exact_duplicates() -> None:
    def same_attr(sc: Scenario) -> bool:
        subs = sc.sub_questions
        return len(subs) == 2 and (subs[0].kind, subs[0].attr) == (subs[1].kind, subs[1].attr)

    world, sc = _find_scenario(same_attr)
    docs = write_documents(sc, world, random.Random(0), NO_SCALING)
    merged = integrate(docs, sc, world, random.Random(0), replace(NO_SCALING, p_merge_same_kind=0.0))
    assert len(merged.tools) == 1
    assert all(sq.entity in merged.tools[0].rows for sq in sc.sub_questions)


# --- stage 4 ---------------------------------------------------------------------------------

def _scaled(op_knob: str, seed: int) -> tuple[Scenario, Toolset]:
    world, sc = _scenario(seed, "parallel_multi_hop")
    knobs = replace(NO_SCALING, **{op_knob: 1.0})
    rng = random.Random(seed)
    toolset = integrate(write_documents(sc, world, rng, knobs), sc, world, rng, knobs)
    return sc, scale(toolset, sc, world, rng, knobs)


@pytest.mark.parametrize("seed", range(10))
def test_functional_generalization_covers_every_attribute_of_the_kind(seed: int) -> None:
    _, ts = _scaled("p_functional_generalization", seed)
    assert ts.ops == ("functional_generalization",)
    general = [t for t in ts.tools if t.fields == KINDS[t.kind].attr_keys]
    assert len(general) == 1 and general[0].param("field") is not None
    assert general[0].name in ts.assignment


@pytest.mark.parametrize("seed", range(10))
def test_parameter_expansion_adds_only_optional_parameters(seed: int) -> None:
    _, ts = _scaled("p_parameter_expansion", seed)
    assert ts.ops == ("parameter_expansion",)
    expanded = [t for t in ts.tools if t.options]
    assert expanded
    for t in expanded:
        schema = t.schema()["function"]["parameters"]
        assert all(o.name not in schema["required"] and "default" in schema["properties"][o.name]
                   for o in t.options)


@pytest.mark.parametrize("seed", range(10))
def test_type_generalization_changes_one_string_parameter(seed: int) -> None:
    _, ts = _scaled("p_type_generalization", seed)
    assert ts.ops == ("type_generalization",)
    changed = [p for t in ts.tools for p in t.params if p.role != "option" and p.shape != "plain"]
    assert len(changed) == 1
    assert changed[0].schema()["type"] in ("string", "array", "object")
    if changed[0].shape == "enum":
        assert "enum" in changed[0].schema()


@pytest.mark.parametrize("seed", range(10))
def test_toolset_extension_adds_distractors_that_answer_nothing(seed: int) -> None:
    sc, ts = _scaled("p_toolset_extension", seed)
    assert ts.ops == ("toolset_extension",)
    distractors = [t for t in ts.tools if t.distractor]
    assert 1 <= len(distractors) <= ScalingKnobs().max_distractors
    asked = {(sq.kind, sq.attr) for sq in sc.sub_questions}
    for t in distractors:
        assert t.name not in ts.assignment
        assert not asked & {(t.kind, f) for f in t.fields}, "a distractor could answer a sub-question"


# --- stage 5 ---------------------------------------------------------------------------------

def _tool_and_world(**changes: Any) -> tuple[ToolSpec, World]:
    world, sc = _scenario(11, "single_hop")
    docs = write_documents(sc, world, random.Random(0), NO_SCALING)
    tool = replace(docs[0], output="json", **changes)
    return tool, world


def test_deployed_code_validates_arguments_without_echoing_them() -> None:
    tool, world = _tool_and_world()
    key = tool.param("key")
    assert key is not None
    fn = _function(deploy(tool, world, random.Random(0)), tool.name)
    entity = tool.needed[0]
    answer = str(world.get(entity).attrs[tool.fields[0]])
    assert answer in str(fn(**{key.name: entity}))
    shouted = "  " + entity.upper() + " "
    assert fn(**{key.name: shouted}) == fn(**{key.name: entity}), "case and spaces do not matter"
    secret = "Guessed Answer Value"
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({}, TypeError),                                  # missing required
        ({key.name: 3}, TypeError),                       # wrong type
        ({key.name: secret}, LookupError),                # unknown name
        ({key.name: entity, secret: 1}, TypeError),       # unexpected keyword
    ]
    for kwargs, error in cases:
        with pytest.raises(error) as info:
            fn(**kwargs)
        assert secret.lower() not in str(info.value).lower()
        assert str(info.value), "errors say what is wrong"


def test_deployed_code_checks_fields_and_options() -> None:
    tool, world = _tool_and_world()
    fields = KINDS[tool.kind].attr_keys
    from toolgym.taskgen.documents import field_param

    key = tool.param("key")
    assert key is not None
    field = field_param(tool.kind, fields, random.Random(0), name="field")
    options = tuple(make_option(n, tool) for n in ("response_format", "strict_match", "timeout_s"))
    tool = replace(tool, fields=fields, params=(key, field, *options))
    fn = _function(deploy(tool, world, random.Random(0)), tool.name)
    entity = tool.needed[0]
    with pytest.raises(ValueError, match="must be one of"):
        fn(**{key.name: entity, "field": "nonsense"})
    with pytest.raises(ValueError, match="between 1 and 60"):
        fn(**{key.name: entity, "field": fields[0], "timeout_s": 0})
    with pytest.raises(TypeError, match="integer"):
        fn(**{key.name: entity, "field": fields[0], "timeout_s": True})
    value = world.get(entity).attrs[fields[-1]]
    assert fn(**{key.name: entity, "field": fields[-1], "response_format": "plain"}) == value
    assert fn(**{key.name: entity, "field": fields[-1], "response_format": "text"}) == f"Result: {value}"
    prefix = entity[: len(entity) - 1]
    if sum(r.casefold().startswith(prefix.casefold()) for r in tool.rows) == 1:
        loose = {key.name: prefix, "field": fields[-1], "strict_match": False, "response_format": "plain"}
        assert fn(**loose) == value
        with pytest.raises(LookupError):
            fn(**{key.name: prefix, "field": fields[-1]})


def test_default_pipeline_uses_the_procedural_stages() -> None:
    p = Pipeline()
    assert (p.decompose, p.write_documents, p.integrate, p.scale, p.deploy) == (
        decompose, write_documents, integrate, scale, deploy)
    assert p.writes_own_code
    assert not Pipeline(deploy=lambda tool, world, rng: deploy(tool, world, rng)).writes_own_code
