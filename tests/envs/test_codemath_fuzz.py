"""Properties of CodeMath's readers, checked by hypothesis: the turn cut and code block
(``codemath.parsing``), ``\\boxed{}`` finding, SimpleTIR's answer extraction (``extract``) and
``wrap_boxed`` (math-verify itself is not fuzzed here: it is slow and not ours).

Budgets come from the hypothesis profile (tests/conftest.py)."""

from __future__ import annotations

import re

import pytest
from fuzz_strategies import any_text
from hypothesis import given
from hypothesis import strategies as st

from toolgym.envs.base import AssistantMessage
from toolgym.envs.codemath.extract import extract_answer, model_output, simpletir_answer, strip_string
from toolgym.envs.codemath.parsing import BOXED, find_last_boxed, parse_turn, truncate_middle, turn_text
from toolgym.envs.codemath.verifier import wrap_boxed

pytestmark = pytest.mark.fuzz

SPACE = re.compile(r"\s")


@given(any_text)
def test_cut_keeps_a_prefix_and_is_idempotent(text: str) -> None:
    parsed = parse_turn(text)
    raw = turn_text(text)
    # Only whitespace around the text before the block is dropped; nothing is added or moved.
    assert SPACE.sub("", raw).startswith(SPACE.sub("", parsed.text))
    assert parse_turn(parsed.text) == parsed
    assert parse_turn(AssistantMessage(content=text)) == parsed
    assert parsed.answered == (BOXED in parsed.text)
    if parsed.code is None:
        assert parsed.text == raw
    else:
        assert parsed.text.endswith("```") and parsed.code in parsed.text


prose = st.text(max_size=40).filter(lambda s: "```" not in s and "<|" not in s)
code = st.text(max_size=60).filter(lambda s: "```" not in s and "<|" not in s)


@given(prose, st.sampled_from(["", "py", "python"]), code, any_text)
def test_first_block_is_the_code_and_the_rest_is_cut(before: str, lang: str, body: str, rest: str) -> None:
    block = f"```{lang}\n{body}\n```"
    parsed = parse_turn(before + block + rest)
    assert parsed.code == body.strip()
    assert parsed.text == before.strip() + block
    assert parsed.answered == (BOXED in before + block)


def balanced(depth: int = 0) -> st.SearchStrategy[str]:
    plain = st.text(max_size=8).map(lambda s: s.replace("{", "").replace("}", ""))
    if depth >= 3:
        return plain
    return st.lists(plain | balanced(depth + 1).map(lambda s: "{" + s + "}"), max_size=4).map("".join)


balanced_text = balanced().filter(lambda s: BOXED not in s)


@given(balanced_text, any_text, st.text(max_size=30).filter(lambda s: "{" not in s))
def test_last_boxed_returns_its_balanced_content(answer: str, before: str, after: str) -> None:
    assert find_last_boxed(before + BOXED + answer + "}" + after) == answer


@given(any_text)
def test_find_last_boxed_never_raises(text: str) -> None:
    found = find_last_boxed(text)
    assert found is None or BOXED + found + "}" in text


@given(balanced_text)
def test_wrap_boxed_round_trips_and_is_idempotent(answer: str) -> None:
    wrapped = wrap_boxed(answer)
    assert wrap_boxed(wrapped) == wrapped
    if "\\boxed" not in answer:
        assert find_last_boxed(wrapped) == answer


@given(any_text, st.integers(2, 600))
def test_truncate_middle_keeps_both_ends(text: str, limit: int) -> None:
    shown, cut = truncate_middle(text, limit)
    assert cut == (len(text) > limit)
    if not cut:
        assert shown == text
    else:
        half = limit // 2
        assert shown.startswith(text[:half]) and shown.endswith(text[-half:])


@given(any_text)
def test_extraction_never_raises_and_drops_stop_words(text: str) -> None:
    cut = model_output(text)
    assert not any(stop in cut for stop in ("</s>", "<|im_end|>", "<|endoftext|>", "[END]"))
    assert isinstance(extract_answer(text), str)
    assert simpletir_answer(text) == extract_answer(cut)


@given(st.integers(-(10**9), 10**9), any_text.filter(lambda s: "boxed" not in s and "<|" not in s and "[END]" not in s
                                                   and "</s>" not in s and "final answer is $" not in s))
def test_boxed_integer_is_the_answer(n: int, before: str) -> None:
    assert simpletir_answer(before + f" \\boxed{{{n}}}.") == str(n)


@given(st.integers(0, 10**6))
def test_answer_phrases_read_numbers(n: int) -> None:
    for text in (f"so the answer is {n}.", f"The final answer is ${n}$. I hope it is correct.", f"答案是 {n}",
                 f"we print {n * 2} and then {n}"):
        assert simpletir_answer(text) == str(n), text


@given(any_text)
def test_strip_string_never_raises(text: str) -> None:
    assert isinstance(strip_string(text), str)
