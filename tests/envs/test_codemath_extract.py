"""SimpleTIR's answer extraction (``toolgym.envs.codemath.extract``), case by case: the Qwen
math toolkit's ``extract_answer`` and ``strip_string`` as SimpleTIR's reward calls them. The
differential test (``tests/envs/differential``) checks the same against the authors' code."""

from __future__ import annotations

import pytest

from toolgym.envs.codemath.extract import model_output, simpletir_answer, strip_string, word_to_number


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        # where the answer is, by preference
        ("so \\boxed{12} and then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("an unclosed \\boxed{12", "12"),  # the toolkit reads the rest of the text
        ("\\boxed 7$ or so", "7"),  # no brace: up to the next $
        ("it is boxed", ""),  # "boxed" at the very end: nothing
        ("The final answer is $7$. I hope it is correct. \\boxed{8}", "7"),
        ("The answer is 7. Really, the answer is 8.", "8"),  # the last "he answer is"
        ("答案是 7\n\n再想想, 答案是 8", "7"),  # the first 答案是, up to a blank line
        ("x = 1,234 and then 5.5 and -3", "-3"),  # the last number, commas dropped
        ("no numbers at all", ""),
        # strip_string
        ("the answer is 5 apples.", "5"),
        ("the answer is \\dfrac{3}{4}", "\\frac{3}{4}"),
        ("the answer is 3/4", "\\frac{3}{4}"),
        ("the answer is 12 \\text{ cm}", "12"),
        ("the answer is x = 4", "4"),
        ("the answer is 2.000", "2"),
        ("the answer is 2.500", "2.500"),
        ("the answer is 50\\%", "50"),
        ("the answer is \\frac12", "\\frac{1}{2}"),
        ("the answer is \\sqrt2", "\\sqrt{2}"),
        ("the answer is twenty one", "21"),
        ("the answer is 007", "7"),
        ("the answer is .5", "0.5"),
    ],
)
def test_simpletir_answer(text: str, answer: str) -> None:
    assert simpletir_answer(text) == answer


def test_text_is_cut_at_stop_words_and_assistant_header() -> None:
    assert model_output("prompt \\boxed{1}<|im_start|>assistant ok [END] \\boxed{2}") == "<|im_start|>assistant ok"
    assert simpletir_answer("\\boxed{3}</s>\\boxed{4}") == "3"


def test_strip_string_quirks_are_kept() -> None:
    assert strip_string("\\left( 1, 2 \\right)") == "(1,2)"
    assert strip_string("band") == "b"  # "and" is deleted wherever it occurs
    assert strip_string("3j") == "3i"


@pytest.mark.parametrize(
    ("words", "value"),
    [("five", 5), ("twenty three", 23), ("two hundred", 200), ("one thousand two hundred thirty", 1230),
     ("two point five", 2.5), ("x plus seven", 7), ("42", 42)],
)  # fmt: skip
def test_word_to_number(words: str, value: float) -> None:
    assert word_to_number(words) == value


@pytest.mark.parametrize("words", ["nothing here", "one thousand two thousand", "thousand million"])
def test_word_to_number_gives_up(words: str) -> None:
    with pytest.raises((ValueError, IndexError)):
        word_to_number(words)
