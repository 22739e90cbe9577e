"""The CodeMath reward check: SimpleTIR's answer extraction, then math-verify (``parse`` both
sides wrapped in ``\\boxed{}``, ``verify(gold, target)``), in killable worker processes."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from toolgym.envs.base import Task, options_schema
from toolgym.envs.codemath import CodeMathEpisode, CodeMathFamily, CodeMathOptions
from toolgym.envs.codemath.verifier import Verdict, VerifierPool, wrap_boxed
from toolgym.envs.runner import RunRequest, RunResult
from toolgym.errors import Unavailable, ValidationFailed


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


# --- SimpleTIR's answer extraction, judged in the worker (verify_solution) ----------------


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        ("Let me add them up. 答案是 24", "24"),
        ("So the answer is 24.", "24"),
        ("The answer is $\\frac{48}{2}$ apples.", "\\frac{48}{2}"),
        ("\nCode execution result: 24\n", "24"),  # the last number of the trajectory
        ("First \\boxed{3}, then \\boxed{24}", "24"),
        ("The final answer is twenty four", "24"),  # word2number adds twenty + four
    ],
)
def test_verify_solution_reads_answers_without_a_box(pool: VerifierPool, solution: str, answer: str) -> None:
    verdict = pool.verify_solution("24", solution)
    assert verdict == Verdict(True, "ok", answer)


def test_verify_solution_without_an_answer(pool: VerifierPool) -> None:
    assert pool.verify_solution("24", "I do not know.") == Verdict(False, "no_answer", "")
    assert pool.verify_solution("24", "答案是 25") == Verdict(False, "ok", "25")


def test_verify_solution_is_bounded_on_pathological_text(short_pool: VerifierPool) -> None:
    # strip_string's "(\d+)\.0*([^\d])" is quadratic on a long digit run; the worker's
    # deadline ends it and the pool carries on.
    start = time.monotonic()
    verdict = short_pool.verify_solution("5", "the answer is " + "1" * 200_000)
    assert verdict.correct is False
    assert time.monotonic() - start < short_pool.timeout_s + 2.0
    assert short_pool.verify_solution("5", "答案是 5").correct


# --- the env: SimpleTIR's extraction by default, boxed-only as an option -------------------


@pytest.fixture(scope="module")
def family(pool: VerifierPool) -> CodeMathFamily:
    return CodeMathFamily(verifier=pool)


def _no_code(request: RunRequest) -> RunResult:
    raise AssertionError("these turns have no code block")


def _episode(family: CodeMathFamily, **options: object) -> CodeMathEpisode:
    task = Task(env_id=family.env_id, id="t", split="test", record={"question": "4! = ?", "answer": "24"})
    return family.start(task, family.parse_options(options, "test"), _no_code, random.Random(0))


def test_chinese_answer_phrase_scores_one_by_default(family: CodeMathFamily) -> None:
    # SimpleTIR's reward reads "答案是 24" (a void turn: no code, no \boxed{}) and scores 1.
    step = _episode(family).step("4! = 4 * 3 * 2 * 1。答案是 24")
    assert step.terminated and step.info["reason"] == "void_turn"
    assert step.reward == 1.0
    assert step.info["verifier_status"] == "ok"
    assert step.info["extracted_answer"] == "24"


def test_boxed_mode_scores_only_a_complete_box(family: CodeMathFamily) -> None:
    step = _episode(family, answer_extraction="boxed").step("4! = 4 * 3 * 2 * 1。答案是 24")
    assert step.reward == 0.0 and step.info["verifier_status"] == "no_answer"
    assert "extracted_answer" not in step.info
    assert _episode(family, answer_extraction="boxed").step("\\boxed{24}").reward == 1.0


def test_answer_extraction_option_is_checked_and_documented(family: CodeMathFamily) -> None:
    assert family.parse_options({}, "train").answer_extraction == "simpletir"
    with pytest.raises(ValidationFailed) as err:
        family.parse_options({"answer_extraction": "last_number"}, "test")
    assert err.value.details["option"] == "answer_extraction"
    assert "simpletir" in options_schema(CodeMathOptions)["answer_extraction"]["doc"]
