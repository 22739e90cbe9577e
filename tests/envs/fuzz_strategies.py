"""Hypothesis strategies shared by the parser fuzz tests: JSON values, call names, and text
built from the pieces the parsers look for, so random text actually reaches their branches."""

from __future__ import annotations

import keyword
from typing import Any

from hypothesis import strategies as st

# Finite floats only: a NaN is not equal to itself, and the parsers reject it on purpose.
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | finite_floats | st.text(max_size=12)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s != "__debug__"
)
dotted_names = st.lists(identifiers, min_size=1, max_size=3).map(".".join)

TAG_PIECES = [
    "<tool_call>", "</tool_call>", "<tool_call>\n", "\n</tool_call>", "<think>", "</think>",
    "<|im_end|>", "<|endoftext|>", "{", "}", '"name"', '"arguments"', ":", ",", "[", "]", "(", ")",
    "f(", "a=1", '"x"', "\n", " ", "```", "```python\n", "\n```", "\\boxed{", "boxed", "$",
    "the answer is", "final answer is $", "$. I hope", "答案是", "42", "-3.5", "1/2", "\\frac", "one",
    "hundred", "thousand", "point", "\\text{cm}", "=", "<tool_parsed_response>",
]  # fmt: skip
"""The substrings the parsers under test branch on."""

noisy_text = st.lists(st.sampled_from(TAG_PIECES) | st.text(max_size=6), max_size=25).map("".join)
"""Text made mostly of parser-relevant pieces, with arbitrary characters between them."""

any_text = st.text(max_size=200) | noisy_text
