r"""The answer SimpleTIR's reward reads out of a trajectory, re-implemented to behave the same.

SimpleTIR scores a rollout with ``compute_score`` (ltzheng/SimpleTIR
``recipe/simpletir/utils/reward_score/hf_math_verify.py``). Before math-verify sees anything,
the answer is pulled out of the decoded response by the Qwen2.5-Math evaluation toolkit's
``extract_answer(text, data_name="math")`` (their copy:
``recipe/simpletir/utils/reward_score/qwen_math_eval_toolkit/parser.py``). That extractor is
more generous than "the last ``\boxed{}``":

1. The text is cut first (their ``extract_solution``): everything before the first
   ``<|im_start|>assistant`` goes, and the text ends at the first of ``</s>``, ``<|im_end|>``,
   ``<|endoftext|>``, ``[END]`` (stripped after each cut).
2. The answer is, in this order of preference: the part between ``final answer is $`` and
   ``$. I hope``; the text after the *last* occurrence of the bare word ``boxed`` (up to its
   matching brace if a ``{`` follows, the rest of the text if that brace never closes, else up
   to the next ``$``); what follows the last ``he answer is``; what follows the last
   ``final answer is``; what follows the *first* ``答案是`` up to a blank line; and failing all
   of these the last number in the text (commas removed first).
3. Line breaks and a leading ``:`` or trailing ``.``/``/`` are dropped, then ``strip_string``
   normalizes it: units and ``\text{}`` removed, ``dfrac`` → ``frac``, number words read as
   numbers (the ``word2number`` package's rules), ``a/b`` → ``\frac{a}{b}``, and more.

So a turn ending ``答案是 24``, or ``the answer is 24``, or one that prints ``24`` last, scores
1 on a gold of 24 in SimpleTIR, with no ``\boxed{}`` anywhere. This module reproduces that
behaviour step by step, quirks included (a unit list with typos, a bracket-unwrapping rule
that can never fire, ``and`` deleted inside words); a differential test replays the authors'
code on recorded cases (``tests/envs/differential``).

Standard library only: the math-verify worker process loads this file by path and runs the
extraction there, where a pathological input (some of these regular expressions are
quadratic on long digit runs) is ended by the worker's deadline instead of stalling the
server.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "model_output", "simpletir_answer", "strip_string", "word_to_number"]

_STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>", "[END]")
_ASSISTANT = "<|im_start|>assistant"


def model_output(solution: str) -> str:
    """Step 1 of the module doc, SimpleTIR's ``extract_solution``.

    Drop what precedes the first assistant header, then end the text at each stop word in turn.
    """
    start = solution.find(_ASSISTANT)
    text = solution[start:] if start >= 0 else solution
    for stop in _STOP_WORDS:
        if stop in text:
            text = text[: text.index(stop)].strip()
    return text


def simpletir_answer(solution: str) -> str:
    """The normalized answer SimpleTIR's reward compares with the gold ("" when none)."""
    return extract_answer(model_output(solution))


# --- step 2: where the answer is ----------------------------------------------------------

_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")


def _after_boxed(text: str) -> str:
    """The text after the last bare ``boxed``.

    A brace group (to its matching brace, or to the end if it never closes), else up to the next
    ``$``, stripped.
    """
    rest = text.rsplit("boxed", 1)[1]
    if not rest.startswith("{"):
        return rest.split("$")[0].strip()
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return rest[1:]


def _locate(text: str) -> str | None:
    """The raw answer text by the extractor's order of preference.

    None means "answer is the empty string, with no normalization" (a ``boxed`` at the very end
    of the text).
    """
    if "final answer is $" in text and "$. I hope" in text:
        return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    if "boxed" in text:
        if text.endswith("boxed"):
            return None
        return _after_boxed(text)
    for marker in ("he answer is", "final answer is"):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    if "答案是" in text:
        return text.split("答案是")[1].strip().split("\n\n")[0].strip()
    numbers = _LAST_NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else ""


def extract_answer(text: str) -> str:
    """Steps 2 and 3 of the module doc on an already cut text (``data_name="math"``)."""
    located = _locate(text.replace("\u043a\u0438", ""))
    if located is None:
        return ""
    answer = re.sub(r"\n\s*", "", located)
    if answer.startswith(":"):
        answer = answer[1:]
    for tail in (".", "/"):
        if answer.endswith(tail):
            answer = answer[:-1]
    return strip_string(answer)


# --- step 3: strip_string -----------------------------------------------------------------

_UNIT_WORDS = [
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .",
    "monkey", "prime", "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per",
    "dm", "lt", "gain", "ab", "way", "west", "a .", "b .", "c .", "d .", "e .", "f .", "g .",
    "h .", "t", "a", "h", "no change", "men", "soldier", "pie", "bc", "excess", "st", "inches",
    "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th", "π r 2", "sq",
    "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw", "yr", "women",
    "feet", "am", "pm", "hr", "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic",
    "cc", "mtr", "s", "ohm", "number", "kmph", "day", "hour", "minute", "min", "second", "man",
    "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³", "hectare", "more", "sec", "unit",
    "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm", "apple", "liter",
    "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre",
    "pi sq m", "s .", "metre", "meter", "inch",
]  # fmt: skip
"""The toolkit's unit words (mostly from MathQA), typos and repeats kept: they are applied in
this order, as regular expressions (so ``.`` matches any character), then again with an
``s`` appended to each."""
_UNIT_PATTERNS = [re.compile(r"(^|\W)" + word + r"($|\W)") for word in _UNIT_WORDS + [w + "s" for w in _UNIT_WORDS]]
_VARIABLE_PREFIXES = ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to")


def _remove_units(text: str) -> str:
    """Two passes over the unit words; a removal that would leave nothing is not applied."""
    for _ in range(2):
        for pattern in _UNIT_PATTERNS:
            removed = pattern.sub(r"\1\2", text)
            if removed:
                text = removed
    return text


def _braced_fractions(text: str) -> str:
    r"""``\frac12`` → ``\frac{1}{2}``, ``\frac1{72}`` → ``\frac{1}{72}``.

    A ``\frac`` with fewer than two characters after it leaves the whole text unchanged.
    """
    head, *pieces = text.split("\\frac")
    out = [head]
    for piece in pieces:
        out.append("\\frac")
        if piece.startswith("{"):
            out.append(piece)
            continue
        if len(piece) < 2:
            return text
        first, second, rest = piece[0], piece[1], piece[2:]
        out.append("{" + first + "}" + (second if second == "{" else "{" + second + "}") + rest)
    return "".join(out)


def _slash_fraction(text: str) -> str:
    r"""``a/b`` with integer parts written plainly (or a part containing ``sqrt``) → ``\frac{a}{b}``.

    Anything else is returned as it is.
    """
    parts = text.split("/")
    if len(parts) != 2:
        return text
    shown: list[str] = []
    for part in parts:
        if "sqrt" in part:
            shown.append(part)
            continue
        try:
            shown.append(str(int(part)))
        except ValueError:
            return text
    if "/".join(shown) != text:
        return text
    return "\\frac{" + shown[0] + "}{" + shown[1] + "}"


def strip_string(text: str) -> str:
    """The toolkit's ``strip_string(text, skip_unit=False)``, step for step."""
    s = text.strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s)
    s = s.replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    without_unit = re.sub(r"\\text{.*?}$", "", s).strip()
    if without_unit and without_unit != s:
        s = without_unit
    s = _remove_units(s)
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = _words_to_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for prefix in _VARIABLE_PREFIXES:
        s = s.replace(prefix, "")
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    # The toolkit would unwrap "{x}" / "(x)" / "[x]" here when the whole string is
    # alphanumeric, which a string starting with a bracket never is: nothing to do.
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _braced_fractions(s)
    return _slash_fraction(s)


# --- number words (the word2number package's word_to_num, as the toolkit calls it) -------

_NUMBER_WORDS: dict[str, int] = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_NUMBER_WORDS.update(
    {
        "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
        "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 1000000,
        "billion": 1000000000,
    }
)  # fmt: skip
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SCALES = ("billion", "million", "thousand")


def _group_value(words: list[str]) -> int:
    """word2number's value of a group of number words between scale words.

    Two words add (or multiply when one is ``hundred``), three are ``a*b + c``, four
    ``a*b + c + d``; more than four count only the first. An empty group raises ``IndexError``,
    as theirs does.
    """
    values = [_NUMBER_WORDS[w] for w in words]
    if len(values) == 4:
        return values[0] * values[1] + values[2] + values[3]
    if len(values) == 3:
        return values[0] * values[1] + values[2]
    if len(values) == 2:
        return values[0] * values[1] if 100 in values else values[0] + values[1]
    return values[0]


def word_to_number(sentence: str) -> int | float:
    """word2number's ``word_to_num``: a digit string as an int, else the number words read as a number.

    The number words are found among the whitespace-separated tokens (every other token ignored).
    Raises ``ValueError`` (no number word, a repeated scale word or ``point``, scales out of
    order) or ``IndexError`` (an empty group), as the package does.
    """
    sentence = sentence.replace("-", " ").lower()
    if sentence.isdigit():
        return int(sentence)
    words = [w for w in sentence.strip().split() if w in _NUMBER_WORDS or w == "point"]
    if not words:
        raise ValueError("no number words")
    if any(words.count(w) > 1 for w in (*_SCALES, "point")):
        raise ValueError("a scale word or 'point' is repeated")
    decimals: list[str] = []
    if "point" in words:
        cut = words.index("point")
        words, decimals = words[:cut], words[cut + 1 :]
    where = {scale: words.index(scale) if scale in words else -1 for scale in _SCALES}
    bil, mil, tho = where["billion"], where["million"], where["thousand"]
    if (tho > -1 and (tho < mil or tho < bil)) or (mil > -1 and mil < bil):
        raise ValueError("scale words out of order")
    total: int | float = 0
    if len(words) == 1:
        total += _NUMBER_WORDS[words[0]]
    elif words:
        if bil > -1:
            total += _group_value(words[:bil]) * 1000000000
        if mil > -1:
            total += _group_value(words[bil + 1 if bil > -1 else 0 : mil]) * 1000000
        if tho > -1:
            start = mil + 1 if mil > -1 else bil + 1 if bil > -1 else 0
            total += _group_value(words[start:tho]) * 1000
        last = len(words) - 1
        if tho > -1 and tho != last:
            total += _group_value(words[tho + 1 :])
        elif mil > -1 and mil != last:
            total += _group_value(words[mil + 1 :])
        elif bil > -1 and bil != last:
            total += _group_value(words[bil + 1 :])
        elif tho == mil == bil == -1:
            total += _group_value(words)
    if decimals:
        if all(w in _DIGIT_WORDS for w in decimals):
            total += float("0." + "".join(str(_NUMBER_WORDS[w]) for w in decimals))
    return total


def _words_to_number(text: str) -> str:
    """The toolkit's ``convert_word_number``: the number as text.

    ``text`` comes back unchanged when word2number gives up.
    """
    try:
        return str(word_to_number(text))
    except (ValueError, IndexError):
        return text
