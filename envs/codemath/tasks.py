r"""CodeMath task records: their validation, the built-in set, and new variants of a task.

Record (docs/architecture.md): ``{question, answer}``, optional ``id`` and ``source``; ``split`` may ride
along on the tasks route and is dropped here. The answer is the gold, any text math-verify
can parse (a number in JSON is accepted and kept as its text).

Built-in tasks come from ``reasoning-gym`` generators with their own gold answers, seeded so
every server builds the same set. Families are chosen so that math-verify is a *sound* judge:
a family whose question already contains an expression equal to its answer is left out,
because math-verify evaluates expressions and would pay for restating the problem —
``basic_arithmetic``/``chain_sum``/``products`` ("Calculate 5 - 3 - 6" answered
``\boxed{5 - 3 - 6}``), ``fraction_simplification`` (the unsimplified fraction equals the
simplified one) and ``prime_factorization`` (``980`` equals the product of the factors
``2, 2, 5, 7, 7`` that reasoning-gym writes with U+00D7 signs). The tests pin those failures.
``gcd``/``lcm`` keep a milder form of it: ``\gcd(780, 461)`` and
``\operatorname{lcm}(98, 58)`` parse and evaluate; a policy has to know to write them.

reasoning-gym gives item ``i`` of a dataset seeded ``s`` the generator seed ``s + i``, so two
datasets with nearby seeds share items: the splits use seeds millions apart, and questions
are de-duplicated within and across splits (test first, then validation, then train), so no
question is in two splits. The set depends on the installed reasoning-gym version.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Mapping
from typing import Any

from toolgym.errors import ValidationFailed

__all__ = [
    "FAMILIES",
    "MAX_TEXT_CHARS",
    "SOURCE_PREFIX",
    "SPLIT_SIZES",
    "builtin_records",
    "family_of",
    "generate",
    "normalize_record",
    "variants",
]

FAMILIES: tuple[str, ...] = (
    "count_bits",
    "count_primes",
    "gcd",
    "gsm_symbolic",
    "lcm",
    "simple_equations",
)
"""reasoning-gym datasets shipped, each with its default configuration."""

SPLIT_SIZES: dict[str, int] = {"train": 50, "validation": 15, "test": 15}
"""Tasks per family and split."""
_SPLIT_SEEDS: dict[str, int] = {"test": 3_000_000, "validation": 2_000_000, "train": 1_000_000}
_VARIANT_SEEDS = (100_000_000, 2**31 - 1)
"""Seeds for ``variants``: far from every built-in split's range."""

SOURCE_PREFIX = "reasoning_gym/"
MAX_TEXT_CHARS = 100_000
_FIELDS = ("question", "answer", "id", "source", "split")


def _text(record: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise ValidationFailed(f"record field {name!r} is required", field=name)
        return None
    if name == "answer" and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        kind = type(value).__name__
        raise ValidationFailed(f"record field {name!r} must be a string, got {kind}", field=name)
    if required and not value.strip():
        raise ValidationFailed(f"record field {name!r} must not be empty", field=name)
    if len(value) > MAX_TEXT_CHARS:
        raise ValidationFailed(f"record field {name!r} is over {MAX_TEXT_CHARS} characters", field=name)
    return value


def normalize_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Check the record's shape and return ``{question, answer[, source]}``.

    A bad shape is a ``ValidationFailed`` naming the field. Whether math-verify can parse the
    answer is the family's check (it needs the verifier pool).
    """
    if not isinstance(record, Mapping):
        raise ValidationFailed("a CodeMath task record must be a JSON object")
    unknown = sorted(set(record) - set(_FIELDS))
    if unknown:
        raise ValidationFailed(
            f"unknown record field(s) {unknown}; CodeMath records take {list(_FIELDS)}",
            field=unknown[0],
        )
    question = _text(record, "question", required=True)
    answer = _text(record, "answer", required=True)
    _text(record, "id", required=False)
    source = _text(record, "source", required=False)
    out: dict[str, Any] = {"question": question, "answer": answer.strip() if answer else answer}
    if source is not None:
        out["source"] = source
    return out


def family_of(record: Mapping[str, Any]) -> str | None:
    """The shipped reasoning-gym family a record came from, or None."""
    source = record.get("source")
    if isinstance(source, str) and source.startswith(SOURCE_PREFIX):
        name = source[len(SOURCE_PREFIX) :]
        if name in FAMILIES:
            return name
    return None


def generate(family: str, seed: int, size: int) -> list[dict[str, str]]:
    """``size`` items of a reasoning-gym dataset, as ``{question, answer}`` pairs."""
    import reasoning_gym  # heavy; only the built-in set and variants need it

    dataset = reasoning_gym.create_dataset(family, seed=seed, size=size)
    return [{"question": str(item["question"]), "answer": str(item["answer"])} for item in dataset]


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[tuple[str, dict[str, Any]], ...]:
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for split in ("test", "validation", "train"):
        want = SPLIT_SIZES[split]
        for family in FAMILIES:
            kept = 0
            # Ask for more than needed: small answer spaces (lcm of two numbers) repeat.
            for item in generate(family, _SPLIT_SEEDS[split], 2 * want + 20):
                if item["question"] in seen:
                    continue
                seen.add(item["question"])
                record = {
                    "id": f"{family}-{split}-{kept:03d}",
                    "question": item["question"],
                    "answer": item["answer"],
                    "source": SOURCE_PREFIX + family,
                }
                out.append((split, record))
                kept += 1
                if kept == want:
                    break
            if kept < want:  # pragma: no cover - a reasoning-gym change, caught by the tests
                raise RuntimeError(f"reasoning-gym {family!r} gave only {kept} distinct {split} questions")
    order = {"train": 0, "validation": 1, "test": 2}
    out.sort(key=lambda pair: order[pair[0]])
    return tuple(out)


def builtin_records() -> Iterable[tuple[str, dict[str, Any]]]:
    """The shipped tasks as ``(split, record)``, deterministic (copies: callers may edit)."""
    return [(split, dict(record)) for split, record in _builtin()]


@functools.lru_cache(maxsize=1)
def _builtin_questions() -> frozenset[str]:
    return frozenset(record["question"] for _, record in _builtin())


def variants(record: Mapping[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Up to ``n`` new tasks like ``record`` (LoopTool-style expansion, docs/methods.md#looptool).

    The same reasoning-gym generator with fresh seeds drawn from ``rng``. Empty when the record
    did not come from a shipped family. A variant never repeats the record's question, another
    variant's, or any built-in question (so evaluation splits stay clean).
    """
    family = family_of(record)
    if family is None or n <= 0:
        return []
    taken = set(_builtin_questions())
    taken.add(str(record.get("question", "")))
    out: list[dict[str, Any]] = []
    for _ in range(20 * n):
        seed = rng.randint(*_VARIANT_SEEDS)
        item = generate(family, seed, 1)[0]
        if item["question"] in taken:
            continue
        taken.add(item["question"])
        out.append(
            {
                "id": f"{family}-var-{seed}",
                "question": item["question"],
                "answer": item["answer"],
                "source": SOURCE_PREFIX + family,
            }
        )
        if len(out) == n:
            break
    return out
