"""CodeMath task records: validation, the reasoning-gym built-in set, variants."""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from toolgym.envs.codemath import CodeMathFamily, VerifierPool
from toolgym.envs.codemath import tasks as cm_tasks
from toolgym.errors import ValidationFailed


@pytest.fixture(scope="module")
def family() -> Iterator[CodeMathFamily]:
    with VerifierPool(workers=1) as pool:
        yield CodeMathFamily(verifier=pool)


# --- validate_record ---------------------------------------------------------------------


def test_valid_record_is_normalized(family: CodeMathFamily) -> None:
    record = {
        "question": "What is 1/2 + 0?",
        "answer": " 1/2 ",
        "id": "q1",
        "source": "mine",
        "split": "test",
    }
    assert family.validate_record(record) == {
        "question": "What is 1/2 + 0?",
        "answer": "1/2",
        "source": "mine",
    }


def test_numeric_answer_is_kept_as_text(family: CodeMathFamily) -> None:
    assert family.validate_record({"question": "q", "answer": 34})["answer"] == "34"
    assert family.validate_record({"question": "q", "answer": 0.5})["answer"] == "0.5"


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"answer": "1"}, "question"),
        ({"question": "q"}, "answer"),
        ({"question": "", "answer": "1"}, "question"),
        ({"question": "q", "answer": "  "}, "answer"),
        ({"question": 3, "answer": "1"}, "question"),
        ({"question": "q", "answer": True}, "answer"),
        ({"question": "q", "answer": ["1"]}, "answer"),
        ({"question": "q", "answer": "1", "id": 7}, "id"),
        ({"question": "q", "answer": "1", "source": {}}, "source"),
        ({"question": "q", "answer": "1", "anwser": "1"}, "anwser"),
        ({"question": "q" * 100_001, "answer": "1"}, "question"),
    ],
)
def test_bad_records_name_the_field(family: CodeMathFamily, record: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        family.validate_record(record)
    assert err.value.details["field"] == field
    assert repr(field) in err.value.message


def test_record_must_be_an_object(family: CodeMathFamily) -> None:
    with pytest.raises(ValidationFailed):
        family.validate_record(["question", "answer"])  # type: ignore[arg-type]


def test_gold_that_math_verify_cannot_parse_is_rejected(family: CodeMathFamily) -> None:
    with pytest.raises(ValidationFailed) as err:
        family.validate_record({"question": "q", "answer": "$$"})
    assert err.value.details["field"] == "answer"


def test_task_metadata_never_shows_the_answer(family: CodeMathFamily) -> None:
    record = {"question": "Find the GCD of 4, 6", "answer": "2", "source": "reasoning_gym/gcd"}
    meta = family.task_metadata(record)
    assert meta == {"source": "reasoning_gym/gcd", "family": "gcd"}
    assert "2" not in json.dumps(meta)
    assert family.task_metadata({"question": "q", "answer": "1"}) == {}


# --- the built-in set --------------------------------------------------------------------


def test_builtin_counts_ids_and_sources() -> None:
    records = list(cm_tasks.builtin_records())
    counts = collections.Counter((split, r["source"]) for split, r in records)
    for family_name in cm_tasks.FAMILIES:
        for split, size in cm_tasks.SPLIT_SIZES.items():
            assert counts[(split, "reasoning_gym/" + family_name)] == size
    ids = [r["id"] for _, r in records]
    assert len(ids) == len(set(ids))
    assert all(set(r) == {"id", "question", "answer", "source"} for _, r in records)


def test_builtin_splits_share_no_question() -> None:
    by_split: dict[str, set[str]] = collections.defaultdict(set)
    total = 0
    for split, record in cm_tasks.builtin_records():
        by_split[split].add(record["question"])
        total += 1
    assert sum(len(s) for s in by_split.values()) == total  # no repeat inside a split either
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]


def test_builtin_records_validate(family: CodeMathFamily) -> None:
    for _, record in cm_tasks.builtin_records():
        family.validate_record(record)


_DUMP = (
    "import json; from toolgym.envs.codemath import tasks; print(json.dumps(list(tasks.builtin_records())))"
)


def test_builtin_set_is_deterministic_across_processes() -> None:
    dumps = []
    for hashseed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", _DUMP], capture_output=True, text=True, check=True, env=env
        )
        dumps.append(out.stdout)
    assert dumps[0] == dumps[1]
    assert json.loads(dumps[0]) == [list(pair) for pair in cm_tasks.builtin_records()]


def test_builtin_records_are_copies() -> None:
    first = list(cm_tasks.builtin_records())
    first[0][1]["answer"] = "tampered"
    assert next(iter(cm_tasks.builtin_records()))[1]["answer"] != "tampered"


# --- why some reasoning-gym families are not shipped -------------------------------------


@pytest.mark.parametrize(
    ("gold", "restated"),
    [
        ("-4", "5 - 3 - 6"),  # basic_arithmetic / chain_sum: "Calculate 5 - 3 - 6."
        ("793546072", "18271 * 43432"),  # products
        ("138/583", "13524/57134"),  # fraction_simplification: the unsimplified fraction
        ("2 × 2 × 5 × 7 × 7", "980"),  # prime_factorization: the number itself  # noqa: RUF001
    ],
)
def test_restating_the_problem_passes_math_verify_for_excluded_families(
    family: CodeMathFamily, gold: str, restated: str
) -> None:
    assert family.verifier.verify(gold, restated).correct
    excluded = {"basic_arithmetic", "chain_sum", "products", "fraction_simplification", "prime_factorization"}
    assert not excluded & set(cm_tasks.FAMILIES)


# --- variants ----------------------------------------------------------------------------


def test_variants_come_from_the_same_generator_and_are_new(family: CodeMathFamily) -> None:
    _, record = next(iter(cm_tasks.builtin_records()))
    builtin_questions = {r["question"] for _, r in cm_tasks.builtin_records()}
    out = family.variants(record, 5, random.Random(7))
    assert len(out) == 5
    assert {v["source"] for v in out} == {record["source"]}
    questions = [v["question"] for v in out]
    assert len(set(questions)) == 5
    assert not set(questions) & builtin_questions
    for variant in out:
        family.validate_record(variant)
    assert family.variants(record, 5, random.Random(7)) == out  # deterministic given the rng
    assert len({v["id"] for v in out}) == 5


def test_variants_of_every_family(family: CodeMathFamily) -> None:
    for name in cm_tasks.FAMILIES:
        out = family.variants(
            {"question": "q", "answer": "1", "source": "reasoning_gym/" + name}, 2, random.Random(1)
        )
        assert len(out) == 2


def test_no_variants_for_foreign_records(family: CodeMathFamily) -> None:
    assert family.variants({"question": "q", "answer": "1"}, 3, random.Random(0)) == []
    assert (
        family.variants(
            {"question": "q", "answer": "1", "source": "reasoning_gym/products"}, 3, random.Random(0)
        )
        == []
    )
    assert (
        family.variants({"question": "q", "answer": "1", "source": "reasoning_gym/gcd"}, 0, random.Random(0))
        == []
    )
