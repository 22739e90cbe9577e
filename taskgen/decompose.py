"""Stage 1, scenario decomposition: a question of one of FTRL's four types, split into sub-questions.

Each sub-question comes with its gold sub-answer.

The procedural decomposer works backwards from the world: it samples *chains* of lookups
(entity -> relation -> entity -> ... -> attribute) and phrases them as one question, so the
decomposition is known by construction instead of parsed out of free text.

- single-hop: one chain of one hop ("Who founded Orvane Group?");
- parallel single-hop: two or three independent one-hop chains, asked together;
- multi-hop: one chain of two or three hops, each hop's entity being the previous hop's
  answer ("In which year was the founder of Orvane Group born?");
- parallel multi-hop: two multi-hop chains asked together.

A chain never revisits an entity (the CEO of the employer of X is never X), so no hop's
answer is already on the table.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.model import QuestionType, Scenario, SubQuestion
from toolgym.taskgen.world import KINDS, AttrSpec, Entity, World

__all__ = ["NoScenario", "decompose"]

_KIND_KEYS = tuple(KINDS)
_WH_WORDS = ("In ", "Which ", "Who ", "What ", "How ", "Where ", "When ", "Under ")
_PAIR_FORMS = (
    "{a} {b}",
    "{a} Also, {b_lower}",
    "I have two questions. First: {a} Second: {b}",
    "Please answer both: (1) {a} (2) {b}",
)
_TRIPLE_FORMS = (
    "{a} {b} {c}",
    "{a} {b} And {c_lower}",
    "Please answer all three: (1) {a} (2) {b} (3) {c}",
    "Three questions. First: {a} Second: {b} Third: {c}",
)


class NoScenario(Exception):
    """The world offered no chain of the requested shape (rare; the generator moves on)."""


@dataclass(frozen=True)
class _Hop:
    entity: Entity
    attr: AttrSpec
    answer: str


def _lower_first(question: str) -> str:
    """Lower-case a leading question word, never a leading name."""
    if question.startswith(_WH_WORDS):
        return question[0].lower() + question[1:]
    return question


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def _chain(world: World, rng: random.Random, length: int, taken: set[tuple[str, str]]) -> list[_Hop]:
    """``length`` lookups, each on the previous lookup's answer.

    ``taken`` holds the (entity, attribute) pairs other chains of the question already ask
    about.
    """
    for _ in range(40):
        entity = rng.choice(world.of(rng.choice(_KIND_KEYS)))
        visited = [entity.name]
        hops: list[_Hop] = []
        for h in range(length):
            last = h == length - 1
            options = [
                a for a in KINDS[entity.kind].attrs
                if (entity.name, a.key) not in taken
                and (last or a.is_ref)
                and not (a.is_ref and entity.attrs[a.key] in visited)
            ]
            if not options:
                break
            attr = rng.choice(options)
            value = entity.attrs[attr.key]
            hops.append(_Hop(entity, attr, str(value)))
            if attr.is_ref:
                assert isinstance(value, str)
                entity = world.get(value)
                visited.append(entity.name)
        if len(hops) == length:
            taken.update((hop.entity.name, hop.attr.key) for hop in hops)
            return hops
    raise NoScenario(f"no chain of {length} hops in this world")


def _subject(entity: Entity, rng: random.Random) -> str:
    template: str = rng.choice(KINDS[entity.kind].subjects)
    return template.format(name=entity.name)


def _phrase(hops: list[_Hop], rng: random.Random) -> str:
    """The chain as one question: inner hops become nested noun phrases."""
    np = _subject(hops[0].entity, rng)
    for hop in hops[:-1]:
        np = rng.choice(hop.attr.phrases).format(x=np)
    return _capitalize(rng.choice(hops[-1].attr.questions).format(x=np))


def _join(parts: list[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    forms = _PAIR_FORMS if len(parts) == 2 else _TRIPLE_FORMS
    slots = dict(zip("abc", parts, strict=False))
    slots.update({f"{k}_lower": _lower_first(v) for k, v in list(slots.items())})
    return rng.choice(forms).format(**slots)


def decompose(world: World, question_type: QuestionType, rng: random.Random, knobs: ScalingKnobs) -> Scenario:
    """Sample a question of ``question_type`` and its decomposition (the ``Decomposer`` protocol).

    Raises ``NoScenario`` when the world has no fitting chain.
    """
    if question_type == "single_hop":
        shape = [1]
    elif question_type == "parallel_single_hop":
        shape = [1] * (3 if rng.random() < knobs.p_three_parallel else 2)
    elif question_type == "multi_hop":
        shape = [3 if rng.random() < knobs.p_three_hops else 2]
    else:
        shape = [2, 3 if rng.random() < knobs.p_three_hops else 2]
    taken: set[tuple[str, str]] = set()
    chains = [_chain(world, rng, length, taken) for length in shape]
    question = _join([_phrase(chain, rng) for chain in chains], rng)

    order = sorted(((h, c) for c, chain in enumerate(chains) for h in range(len(chain))))
    index = {pos: i for i, pos in enumerate(order)}
    subs: list[SubQuestion] = []
    for h, c in order:
        hop = chains[c][h]
        text = _capitalize(rng.choice(hop.attr.questions).format(x=_subject(hop.entity, rng)))
        subs.append(SubQuestion(
            index=index[(h, c)], chain=c, hop=h, kind=hop.entity.kind, entity=hop.entity.name,
            attr=hop.attr.key, answer=hop.answer, text=text,
            depends_on=index[(h - 1, c)] if h > 0 else None,
        ))
    answer = ", ".join(chain[-1].answer for chain in chains)
    return Scenario(question_type, question, tuple(subs), answer)
