"""The CodeMath reward check: math-verify (``parse`` both sides wrapped in ``\\boxed{}``,
``verify(gold, target)``; PAPERS.md §3) in killable worker processes (DESIGN.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from toolgym.envs.codemath.verifier import Verdict, VerifierPool, wrap_boxed
from toolgym.errors import Unavailable


@pytest.fixture(scope="module")
def pool() -> Iterator[VerifierPool]:
    with VerifierPool(workers=2, timeout_s=10.0) as p:
        yield p


@pytest.mark.parametrize(
    "answer", ["1/2", "0.5", "\\frac{1}{2}", "\\dfrac{1}{2}", "\\frac12", "2^{-1}", ".5"]
)
def test_equivalent_forms_of_one_half_are_correct(pool: VerifierPool, answer: str) -> None:
    assert pool.verify("1/2", answer) == Verdict(True, "ok")
    assert pool.verify("\\frac{1}{2}", answer).correct


@pytest.mark.parametrize("answer", ["0.51", "2", "1/3", "x", "-1/2"])
def test_wrong_answers_score_zero(pool: VerifierPool, answer: str) -> None:
    assert pool.verify("1/2", answer) == Verdict(False, "ok")


def test_no_answer_and_unparsable_answer(pool: VerifierPool) -> None:
    assert pool.verify("5", None) == Verdict(False, "no_answer")
    assert pool.verify("5", "") == Verdict(False, "unparsable")


def test_gold_already_boxed_is_not_wrapped_again(pool: VerifierPool) -> None:
    assert wrap_boxed("\\boxed{3}") == "\\boxed{3}"
    assert wrap_boxed("3") == "\\boxed{3}"
    assert pool.verify("\\boxed{3}", "3").correct


def test_equation_answer_matches_its_value(pool: VerifierPool) -> None:
    # math-verify compares the right-hand side of "x = 13" with a numeric gold.
    assert pool.verify("13", "e = 13").correct


def test_check_gold(pool: VerifierPool) -> None:
    assert pool.check_gold("42") == Verdict(True, "ok")
    assert pool.check_gold("") == Verdict(False, "gold_unparsable")


def test_usable_from_many_threads(pool: VerifierPool) -> None:
    # math-verify's SIGALRM timeouts fail outside the main thread; the pool must not care.
    results: list[Verdict] = []
    lock = threading.Lock()

    def check(i: int) -> None:
        verdict = pool.verify(str(i), f"\\frac{{{2 * i}}}{{2}}")
        with lock:
            results.append(verdict)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [Verdict(True, "ok")] * 8


@pytest.fixture(scope="module")
def short_pool() -> Iterator[VerifierPool]:
    with VerifierPool(workers=1, timeout_s=1.5) as p:
        yield p


@pytest.mark.parametrize(
    "hostile",
    ["9^{9^{9^{9}}}", "(2^{2^{30}})!", "2^{2^{40}}", "100000000!", "\\frac{" * 2000 + "1" + "}" * 2000],
)
def test_hostile_latex_is_bounded_and_scores_zero(short_pool: VerifierPool, hostile: str) -> None:
    start = time.monotonic()
    verdict = short_pool.verify("5", hostile)
    assert verdict.correct is False
    assert verdict.status in ("timeout", "error", "unparsable")
    assert time.monotonic() - start < short_pool.timeout_s + 2.0
    assert short_pool.verify("5", "5").correct  # the pool still works afterwards


def test_inner_alarm_bounds_a_check_without_killing(pool: VerifierPool) -> None:
    # math-verify's own 3 s alarm fires first (the worker's main thread): verdict timeout.
    verdict = pool.verify("5", "9^{9^{9^{9}}}")
    assert verdict == Verdict(False, "timeout")


def test_overrunning_worker_is_killed_and_replaced() -> None:
    # A hard deadline below math-verify's own 3 s alarm: only killing the worker stops it.
    with VerifierPool(workers=1, timeout_s=1.0) as short:
        assert short.verify("2", "2").correct
        start = time.monotonic()
        assert short.verify("5", "9^{9^{9^{9}}}") == Verdict(False, "timeout")
        assert time.monotonic() - start < 3.0
        assert short.live_workers == 0
        assert short.verify("2", "4/2") == Verdict(True, "ok")
        assert short.live_workers == 1


def test_hostile_gold_is_bounded_too() -> None:
    with VerifierPool(workers=1, timeout_s=1.0) as short:
        assert short.check_gold("9^{9^{9^{9}}}").status in ("ok", "timeout")
        assert short.verify("(2^{2^{30}})!", "1") == Verdict(False, "timeout")


def test_workers_are_recycled_after_max_calls() -> None:
    with VerifierPool(workers=1, max_calls_per_worker=2) as p:
        for i in range(5):
            assert p.verify(str(i), str(i)).correct
        assert p.live_workers == 1


def test_closed_pool_refuses_and_close_is_idempotent() -> None:
    p = VerifierPool(workers=1)
    assert p.verify("1", "1").correct
    p.close()
    p.close()
    assert p.live_workers == 0
    with pytest.raises(Unavailable):
        p.verify("1", "1")
