r"""Reading one assistant turn as LoopTool reads it: reasoning dropped, then tool calls.

LoopTool (Rednote-ExperienceAI-Lab/LoopTool) reads a response in these steps; we follow them,
and say where we add to them:

1. The turn ends at the first ``<|im_end|>`` (their ``compute_score`` splits on it); a trailing
   ``<|endoftext|>`` is dropped too (``strip_end_tokens`` from the shared parser).
2. Reasoning is dropped: if ``</think>`` occurs, only the text after the *last* one counts,
   stripped of newlines (``remove_reasoning_content`` in ``dataloop/filter_grpo_sample.py``).
   Without ``</think>`` the whole text counts, an unclosed ``<think>`` included.
3. Qwen tags: every match of ``<tool_call>\n(.*?)\n</tool_call>`` (DOTALL) is one call, its
   body JSON (``_extract_tool_calls``; ``tag_blocks`` finds the same matches in linear time).
   Exactly that form: a block without the newlines is not read, as in LoopTool and in the
   Qwen handler of their BFCL evaluation (``bfcl/qwentool.py``). LoopTool keeps a body that is
   not JSON as a raw string, which can never equal a gold call; we report it as a problem
   instead (same reward, 0, and the reason is visible). A tag that the pattern does not read
   is ignored, as theirs ignores it; we count such tags in ``unread_tags`` and say why in
   ``parse_note``. ``lenient=True`` (the env's ``parse: "lenient"`` option, ours) reads a
   ``<tool_call>...</tool_call>`` block whatever whitespace surrounds its body.
4. BFCL-style Python call lists ``[get_weather(city="Paris"), add(a=1, b=2)]``: LoopTool's
   ``ast_parse``/``default_decode_execute_prompting`` (copied from BFCL) wrap the text in
   ``[...]`` and read it with ``ast``. Theirs evaluates ``BinOp`` and ``Lambda`` nodes with
   ``eval`` and turns bare names and nested calls into strings; ours reads literals only
   (strings, numbers, ``True``/``False``/``None``, lists, tuples as lists, dicts with string
   keys, a sign on a number), never evaluates anything, and reports anything else (names,
   calls, operators, positional or repeated arguments, ``**kwargs``) as a problem.
5. OpenAI ``tool_calls`` (our addition): read with the shared parser (``toolgym.envs.actions``);
   the message's ``content`` is read as in steps 1-4 and its calls are added.

A tool-call *object* in a tag must be exactly ``{"name": str, "arguments": object}``: LoopTool
compares the whole object with the gold ``{"name", "arguments"}``, so an extra key or
``arguments`` given as a JSON string can never match there; we report it as a problem.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from toolgym.envs.actions import ParsedCall, parse_action, strip_end_tokens
from toolgym.envs.base import AssistantMessage
from toolgym.envs.functioncall.values import MAX_DEPTH, ValueProblem, check_value

__all__ = [
    "MAX_RESPONSE_CHARS",
    "ActionForm",
    "ParsedResponse",
    "parse_python_calls",
    "parse_response",
    "parse_tag_calls",
    "remove_reasoning",
    "tag_blocks",
]

ActionForm = Literal["text", "tags", "python", "openai"]

MAX_RESPONSE_CHARS = 100_000
"""Longest response (after reasoning is dropped) that is read at all. Python's own parser
fails on some inputs of a few thousand characters (deep nesting); a bound keeps every step
fast and its ``info`` small."""

TAG_OPEN = "<tool_call>"
TAG_CLOSE = "</tool_call>"
_BLOCK_OPEN = "<tool_call>\n"
_BLOCK_CLOSE = "\n</tool_call>"
_EMPTY_LIST = re.compile(r"^\[\s*\]$")
_BRACKETED_CALL = re.compile(r"^\[\s*[A-Za-z_][\w.]*\s*\(")
_BARE_CALL = re.compile(r"^[A-Za-z_][\w.]*\(.*\)$", re.DOTALL)
_FENCE_OPEN = re.compile(r"^```[A-Za-z0-9_+-]*[ \t]*\n")


@dataclass(frozen=True)
class ParsedResponse:
    """What one action says: its calls, and why it is invalid if it is.

    ``problems`` non-empty means the action is invalid (``info["status"] == "invalid_action"``,
    reward 0). ``has_tool_call_tag`` is LoopTool's own test for "the response contains a tool
    call" (a ``<tool_call>`` or ``</tool_call>`` substring).
    """

    form: ActionForm
    response: str
    calls: tuple[ParsedCall, ...] = ()
    problems: tuple[str, ...] = ()
    has_tool_call_tag: bool = False
    unread_tags: int = 0
    parse_note: str | None = None
    """Why ``unread_tags`` tags were not read, and what would read them (None when all were)."""

    @property
    def valid(self) -> bool:
        """True when the action has no problems; an invalid action scores 0."""
        return not self.problems

    @property
    def makes_call(self) -> bool:
        """Whether the response counts as a tool call for a text-gold task."""
        return self.has_tool_call_tag or bool(self.calls)

    def calls_as_dicts(self) -> list[dict[str, Any]]:
        """The calls as ``{"name", "arguments"}`` dicts, the form the verifiers and ``info`` use."""
        return [{"name": c.name, "arguments": c.arguments} for c in self.calls]


@dataclass
class _Calls:
    calls: list[ParsedCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, arguments: dict[str, Any], where: str) -> None:
        try:
            check_value(arguments, f"{where} arguments")
        except ValueProblem as exc:
            self.problems.append(str(exc))
            return
        self.calls.append(ParsedCall(id=f"call_0_{len(self.calls)}", name=name, arguments=arguments))


def remove_reasoning(text: str) -> str:
    """LoopTool's ``remove_reasoning_content``: the text after the last ``</think>``, stripped of newlines.

    The whole text when there is no ``</think>``.
    """
    if "</think>" in text:
        return text.split("</think>")[-1].strip("\n")
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def tag_blocks(response: str, lenient: bool = False) -> list[str]:
    r"""What LoopTool's ``re.findall(r"<tool_call>\n(.*?)\n</tool_call>", response, re.DOTALL)`` returns.

    Found in linear time: the regex takes seconds on 100 KB of unclosed ``<tool_call>\n``, since
    it rescans to the end from every one. ``lenient``: the body of every
    ``<tool_call>...</tool_call>`` pair instead, surrounding whitespace stripped.
    """
    opening, closing = (TAG_OPEN, TAG_CLOSE) if lenient else (_BLOCK_OPEN, _BLOCK_CLOSE)
    bodies: list[str] = []
    pos = 0
    while True:
        start = response.find(opening, pos)
        if start < 0:
            return bodies
        end = response.find(closing, start + len(opening))
        if end < 0:  # no later opening can find a close either
            return bodies
        body = response[start + len(opening) : end]
        bodies.append(body.strip() if lenient else body)
        pos = end + len(closing)


def _unread_note(unread: int, lenient: bool) -> str | None:
    if not unread:
        return None
    if lenient:
        return f"{unread} <tool_call> tag(s) had no closing </tool_call> after them and were not read"
    return (
        f"{unread} <tool_call> tag(s) were not in LoopTool's exact form '<tool_call>\\n{{json}}\\n</tool_call>' "
        "(a newline right after <tool_call> and right before </tool_call>) and were not read, as "
        "LoopTool does not read them; the reset option parse='lenient' reads them"
    )


def parse_tag_calls(response: str, lenient: bool = False) -> tuple[list[ParsedCall], list[str], int]:
    r"""Calls in ``<tool_call>\n{json}\n</tool_call>`` blocks (any whitespace if ``lenient``).

    Returns (calls, problems, unread tags).
    """
    out = _Calls()
    bodies = tag_blocks(response, lenient)
    unread = max(0, response.count(TAG_OPEN) - len(bodies))
    if not bodies and lenient:
        out.problems.append("found <tool_call> tags but no complete <tool_call>...</tool_call> block")
    elif not bodies:
        out.problems.append(
            "found <tool_call> tags but no block of the form '<tool_call>\\n{json}\\n</tool_call>' "
            "(the newlines are required, as in LoopTool)"
        )
    for i, body in enumerate(bodies):
        where = f"tool call {i}"
        try:
            obj = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            out.problems.append(f"{where}: not valid JSON ({str(exc)[:200]})")
            continue
        if not isinstance(obj, dict):
            out.problems.append(f'{where}: expected a JSON object {{"name", "arguments"}}')
            continue
        keys = set(obj)
        if keys != {"name", "arguments"}:
            out.problems.append(
                f"{where}: the object must have exactly the keys 'name' and 'arguments', got {sorted(keys)}"
            )
            continue
        name, arguments = obj["name"], obj["arguments"]
        if not isinstance(name, str) or not name:
            out.problems.append(f"{where}: 'name' must be a non-empty string")
            continue
        if not isinstance(arguments, dict):
            out.problems.append(f"{where} ({name}): 'arguments' must be a JSON object")
            continue
        out.add(name, arguments, f"{where} ({name})")
    return out.calls, out.problems, unread


# --- BFCL-style Python call lists, literals only --------------------------------------------


class _NotLiteral(ValueError):
    pass


def _literal(node: ast.expr, depth: int) -> Any:
    """A JSON value from an ``ast`` node, or ``_NotLiteral``. Nothing is ever evaluated."""
    if depth > MAX_DEPTH:
        raise _NotLiteral(f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            check_value(value, "value")
            return value
        raise _NotLiteral(f"{type(value).__name__} constant {ast.unparse(node)[:40]} is not a JSON value")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = node.operand
        if (
            isinstance(operand, ast.Constant)
            and isinstance(operand.value, int | float)
            and not isinstance(operand.value, bool)
        ):
            return -operand.value if isinstance(node.op, ast.USub) else operand.value
        raise _NotLiteral("a sign applies only to a number literal")
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(item, depth + 1) for item in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for key, item in zip(node.keys, node.values, strict=True):
            if key is None:
                raise _NotLiteral("'**' unpacking is not a literal")
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise _NotLiteral("dict keys must be string literals")
            out[key.value] = _literal(item, depth + 1)
        return out
    if isinstance(node, ast.Name):
        raise _NotLiteral(f"bare name {node.id!r} is not a literal (quote strings; use True/False/None)")
    if isinstance(node, ast.Call):
        raise _NotLiteral("a call is not a literal; nothing is evaluated")
    raise _NotLiteral(f"{type(node).__name__} expression is not a literal; nothing is evaluated")


def _func_name(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _strip_fence(text: str) -> str:
    """BFCL strips backticks, newlines and spaces; we also drop a ```python fence line."""
    text = text.strip()
    if text.startswith("```"):
        text = _FENCE_OPEN.sub("", text, count=1)
    return text.strip("`\n ")


def looks_like_call_list(response: str) -> bool:
    """Whether a tag-free response is an attempt at a Python call list (or an empty one).

    A plain-text answer is not read as code: only text that starts ``[name(`` or is one bare
    ``name(...)`` call (no space before the parenthesis) is.
    """
    text = _strip_fence(response)
    return bool(_EMPTY_LIST.match(text) or _BRACKETED_CALL.match(text) or _BARE_CALL.match(text))


def parse_python_calls(response: str) -> tuple[list[ParsedCall], list[str]]:
    """Calls in a BFCL-style list ``[f(a=1), pkg.g(b="x")]``; literals only (see module doc)."""
    text = _strip_fence(response)
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        # MemoryError/RecursionError: CPython's parser gives up on deep nesting that way.
        return [], [f"the call list does not parse as Python: {type(exc).__name__}: {str(exc)[:200]}"]
    if not isinstance(tree.body, ast.List):
        return [], ["expected a list of calls like [f(a=1), g(b=2)]"]
    out = _Calls()
    for i, node in enumerate(tree.body.elts):
        where = f"call {i}"
        if not isinstance(node, ast.Call):
            out.problems.append(f"{where}: {ast.unparse(node)[:60]!r} is not a function call")
            continue
        name = _func_name(node.func)
        if name is None:
            out.problems.append(f"{where}: the function must be a (dotted) name")
            continue
        where = f"{where} ({name})"
        if node.args:
            out.problems.append(f"{where}: positional arguments are not accepted; name every argument")
            continue
        arguments: dict[str, Any] = {}
        bad = False
        for kw in node.keywords:
            if kw.arg is None:
                out.problems.append(f"{where}: '**' unpacking is not accepted")
                bad = True
                break
            if kw.arg in arguments:
                out.problems.append(f"{where}: argument {kw.arg!r} is given twice")
                bad = True
                break
            try:
                arguments[kw.arg] = _literal(kw.value, 1)
            except (_NotLiteral, ValueProblem) as exc:
                out.problems.append(f"{where}: argument {kw.arg!r}: {exc}")
                bad = True
                break
        if not bad:
            out.add(name, arguments, where)
    return out.calls, out.problems


# --- one entry point ------------------------------------------------------------------------


def _parse_text(text: str, lenient: bool) -> ParsedResponse:
    text = strip_end_tokens(text.split("<|im_end|>")[0])
    response = remove_reasoning(text)
    has_tag = TAG_OPEN in response or TAG_CLOSE in response
    if len(response) > MAX_RESPONSE_CHARS:
        return ParsedResponse(
            form="text",
            response=response[:200],
            problems=(f"the response is {len(response)} characters long; the limit is {MAX_RESPONSE_CHARS}",),
            has_tool_call_tag=has_tag,
        )
    if has_tag:
        calls, problems, unread = parse_tag_calls(response, lenient)
        return ParsedResponse(
            form="tags",
            response=response,
            calls=tuple(calls),
            problems=tuple(problems),
            has_tool_call_tag=True,
            unread_tags=unread,
            parse_note=_unread_note(unread, lenient),
        )
    if looks_like_call_list(response):
        calls, problems = parse_python_calls(response)
        return ParsedResponse(form="python", response=response, calls=tuple(calls), problems=tuple(problems))
    return ParsedResponse(form="text", response=response)


def parse_response(action: object, lenient: bool = False) -> ParsedResponse:
    """Read one action (a raw turn, or an ``AssistantMessage``); never raises, never evaluates.

    ``lenient`` reads tag blocks whatever whitespace surrounds their JSON (module doc, step 3).
    """
    if isinstance(action, str):
        return _parse_text(action, lenient)
    if not isinstance(action, AssistantMessage):
        return ParsedResponse(
            form="text",
            response="",
            problems=(f"an action must be a string or an assistant message, got {type(action).__name__}",),
        )
    content = _parse_text(action.content or "", lenient)
    if not action.tool_calls:
        return content
    structured = parse_action(AssistantMessage(content=None, tool_calls=action.tool_calls))
    out = _Calls()
    for i, call in enumerate(structured.calls):
        out.add(call.name, call.arguments, f"tool_calls[{i}] ({call.name})")
    if structured.skipped_calls:
        out.problems.append(
            f"{structured.skipped_calls} of {len(action.tool_calls)} tool_calls lack a function name "
            "or have arguments that are not a JSON object"
        )
    for call in content.calls:
        out.add(call.name, call.arguments, f"content call ({call.name})")
    return ParsedResponse(
        form="openai",
        response=content.response,
        calls=tuple(out.calls),
        problems=tuple(out.problems) + content.problems,
        has_tool_call_tag=content.has_tool_call_tag,
        unread_tags=content.unread_tags,
        parse_note=content.parse_note,
    )
