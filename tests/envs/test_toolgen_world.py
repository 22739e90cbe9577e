"""The world model: deterministic, consistent relations, names that cannot hide in each other."""

from __future__ import annotations

import random

import pytest

from toolgym.taskgen.world import KINDS, World


def _snapshot(world: World) -> list[tuple[str, str, list[tuple[str, object]]]]:
    return [(e.kind, e.name, list(e.attrs.items())) for kind in KINDS for e in world.of(kind)]


def test_same_rng_seed_gives_the_same_world() -> None:
    assert _snapshot(World.build(random.Random(5))) == _snapshot(World.build(random.Random(5)))
    assert _snapshot(World.build(random.Random(5))) != _snapshot(World.build(random.Random(6)))


@pytest.mark.parametrize("seed", range(20))
def test_relations_point_at_entities_of_the_declared_kind(seed: int) -> None:
    world = World.build(random.Random(seed))
    for kind, spec in KINDS.items():
        assert world.of(kind), f"no {kind} in the world"
        for entity in world.of(kind):
            assert list(entity.attrs) == list(spec.attr_keys)
            for attr in spec.attrs:
                value = entity.attrs[attr.key]
                if attr.is_ref:
                    assert isinstance(value, str)
                    assert world.get(value).kind == attr.target
                else:
                    assert isinstance(value, int if attr.type == "int" else str)
                    assert ", " not in str(value), "a comma-space would split a gold in FTRL's check"
    for country in world.of("country"):
        capital = world.get(str(country.attrs["capital"]))
        assert capital.attrs["country"] == country.name
    for company in world.of("company"):
        assert company.attrs["ceo"] != company.attrs["founder"]


@pytest.mark.parametrize("seed", range(20))
def test_no_name_is_inside_another(seed: int) -> None:
    """A gold name hidden inside another entity's name would let a wrong call be credited."""
    world = World.build(random.Random(seed))
    names = [e.name.lower() for kind in KINDS for e in world.of(kind)]
    assert len(names) == len(set(names))
    for a in names:
        for b in names:
            assert a == b or a not in b, (a, b)
