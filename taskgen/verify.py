"""Self-verification: a task is kept only if its reference solution really solves it.

``check_record`` is the one set of rules, written against the *record* (what a trainer and
the ToolUse env see) and an ``Executor`` that runs one call. Two executors exist:

- ``own_code_executor``: compiles and execs the tool sources in this process, each in a
  throwaway namespace. Fast (microseconds per call), and used during generation. It runs
  code with the server's privileges, so it is **only** for code this generator wrote
  itself; ``generate`` uses it only when stage 5 is the built-in ``deploy``.
- ``sandbox_executor`` / ``verify_in_sandbox``: every call goes through a ``Runner``
  (``RunRequest -> RunResult``, one fresh process per call inside one sandbox), so a whole
  batch of tasks is verified per sandbox. This is the path for code from anywhere else,
  e.g. a future LLM deployer, or records registered by users.

The rules (each failure is a reason ``"<code>: <detail>"``; the code is what gets counted):

- ``malformed``: fields missing or of the wrong type, tool names and code names differ;
- ``schema_invalid``: a tool schema is not a valid OpenAI function schema;
- ``answer_in_question``: a gold sub-answer is already written in the question;
- ``arguments_invalid``: a reference call does not satisfy its tool's schema;
- ``reference_mismatch``: a tool's reference calls and its golds differ in number (the
  j-th reference call to tool T owns ``unsolved_set[T][j]``);
- ``dependency_broken``: a call after the first turn takes no answer of the turn before;
- ``reference_call_error``: a reference call raised;
- ``gold_not_produced``: a reference call's output does not verify its own gold;
- ``echoes_argument``: a reference call's output contains one of its arguments;
- ``unsolved_after_reference``: FTRL's greedy bookkeeping over the reference calls leaves
  golds unsolved;
- ``final_answer_mismatch``: a part of ``answer`` is not a gold verified by its call;
- ``canary_echo``: a probe call with a marker string in every free-text argument shows the
  marker in its output or error.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from toolgym.envs.base import Runner
from toolgym.envs.runner import FunctionCall, RunLimits, RunRequest
from toolgym.taskgen.ftrl import answer_verify, error_text, format_result, normalize, solve_greedily
from toolgym.taskgen.schema import check_arguments, check_tool_schema

__all__ = [
    "CANARY",
    "Executor",
    "Outcome",
    "Rejection",
    "SandboxReport",
    "check_record",
    "own_code_executor",
    "reason_code",
    "sandbox_executor",
    "verify_in_sandbox",
]

CANARY = "qzxjcanary"
"""The marker probe calls pass as free text; no generated name or value contains it."""


@dataclass(frozen=True)
class Outcome:
    """One call's result as the policy would see it: the formatted value, or FTRL's error text."""

    ok: bool
    text: str


Executor = Callable[[str, dict[str, Any]], Outcome]
"""Runs ``tool(**arguments)`` given the tool's name; never raises for a tool's own failure."""


def reason_code(reason: str) -> str:
    """The reason code of ``reason``: its text up to the first colon, the key rejections are counted by."""
    return reason.split(":", 1)[0]


def _loads(value: Any) -> Any:
    """The paper's files carry ``tools``, ``codes`` and ``unsolved_set`` as JSON strings."""
    return json.loads(value) if isinstance(value, str) else value


def _leaves(value: Any) -> Iterable[str]:
    """Argument values a tool could echo: strings of 3+ characters, integers of 3+ digits."""
    if isinstance(value, bool):
        return
    if isinstance(value, str | int):
        text = normalize(str(value))
        if len(text) >= 3:
            yield text
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)


def _probe_value(schema: Mapping[str, Any]) -> tuple[Any, bool]:
    """A value for a probe call, and whether it carries the canary."""
    t = schema.get("type")
    if t == "string":
        return (schema["enum"][0], False) if "enum" in schema else (CANARY, True)
    if t == "integer" or t == "number":
        return schema.get("minimum", 1), False
    if t == "boolean":
        return False, False
    if t == "array":
        item, marked = _probe_value(schema.get("items", {}))
        return [item], marked
    if t == "object":
        out: dict[str, Any] = {}
        marked = False
        for name in schema.get("required", []):
            out[name], m = _probe_value(schema["properties"][name])
            marked = marked or m
        return out, marked
    return None, False


def _probe_arguments(parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """Required arguments only, the canary in every free-text slot; None when there is none."""
    args, marked = _probe_value({"type": "object", **parameters})
    return args if marked else None


@dataclass
class _Parsed:
    question: str
    tools: list[dict[str, Any]]
    codes: dict[str, str]
    unsolved: dict[str, list[str]]
    turns: list[list[dict[str, Any]]]
    answer: str


def _parse(record: Mapping[str, Any]) -> _Parsed | str:
    try:
        messages = record["messages"]
        question = messages[-1]["content"]
        tools = _loads(record["tools"])
        codes = _loads(record["codes"])
        unsolved = _loads(record["unsolved_set"])
        turns = record["reference_solution"]
        answer = record["answer"]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return f"malformed: {type(exc).__name__}: {exc}"
    if not isinstance(question, str) or not isinstance(answer, str) or not answer:
        return "malformed: question and answer must be non-empty strings"
    if not isinstance(tools, list) or not isinstance(codes, dict) or not isinstance(unsolved, dict):
        return "malformed: tools must be a list, codes and unsolved_set objects"
    if not isinstance(turns, list) or not all(isinstance(t, list) and t for t in turns) or not turns:
        return "malformed: reference_solution must be a non-empty list of non-empty turns"
    for golds in unsolved.values():
        if not isinstance(golds, list) or not golds or not all(isinstance(g, str) and g for g in golds):
            return "malformed: every unsolved_set entry must be a non-empty list of strings"
    return _Parsed(question, tools, codes, unsolved, turns, answer)


def check_record(record: Mapping[str, Any], execute: Executor | None, *, probes: bool = True) -> list[str]:
    """Reasons ``record`` fails verification; empty when it passes.

    With ``execute=None`` only the static rules run (for code that must not run here: verify it
    in a sandbox).
    """
    parsed = _parse(record)
    if isinstance(parsed, str):
        return [parsed]
    reasons: list[str] = []
    schemas: dict[str, dict[str, Any]] = {}
    for tool in parsed.tools:
        problems = check_tool_schema(tool)
        if problems:
            reasons.append(f"schema_invalid: {problems[0]}")
            continue
        schemas[tool["function"]["name"]] = tool["function"]["parameters"]
    if reasons:
        return reasons
    if list(schemas) != list(dict.fromkeys(schemas)) or len(schemas) != len(parsed.tools):
        return ["malformed: duplicate tool names"]
    if sorted(schemas) != sorted(parsed.codes):
        return ["malformed: the tools and the codes name different functions"]
    if any(name not in schemas for name in parsed.unsolved):
        return ["malformed: unsolved_set names a tool that does not exist"]

    question = normalize(parsed.question)
    for golds in parsed.unsolved.values():
        for gold in golds:
            if all(normalize(piece) in question for piece in gold.split(", ")):
                reasons.append(f"answer_in_question: {gold!r}")

    # Which gold each reference call owns: the j-th call to T owns unsolved_set[T][j].
    owned: list[list[str | None]] = []
    seen: dict[str, int] = {}
    for turn in parsed.turns:
        row: list[str | None] = []
        for call in turn:
            name = call.get("name") if isinstance(call, dict) else None
            args = call.get("arguments") if isinstance(call, dict) else None
            if name not in schemas:
                return [f"malformed: reference call to unknown tool {name!r}"]
            problems = check_arguments(schemas[name], args)
            if problems:
                reasons.append(f"arguments_invalid: {name}: {problems[0]}")
            j = seen.get(name, 0)
            seen[name] = j + 1
            golds = parsed.unsolved.get(name, [])
            row.append(golds[j] if j < len(golds) else None)
        owned.append(row)
    for name, golds in parsed.unsolved.items():
        if seen.get(name, 0) != len(golds):
            reasons.append(f"reference_mismatch: {name} has {len(golds)} golds and {seen.get(name, 0)} calls")
    if any(g is None for row in owned for g in row):
        reasons.append("reference_mismatch: a reference call owns no gold")
    for t in range(1, len(parsed.turns)):
        previous = {normalize(g) for g in owned[t - 1] if g is not None}
        for call in parsed.turns[t]:
            if not any(leaf in previous for leaf in _leaves(call["arguments"])):
                reasons.append(
                    f"dependency_broken: {call['name']} in turn {t + 1} uses no answer of turn {t}")
    if reasons or execute is None:
        return reasons
    return _check_execution(parsed, owned, schemas, execute, probes)


def _check_execution(parsed: _Parsed, owned: list[list[str | None]], schemas: Mapping[str, Mapping[str, Any]],
                     execute: Executor, probes: bool) -> list[str]:
    reasons: list[str] = []
    outputs: list[tuple[str, str]] = []
    produced: dict[str, str] = {}
    for turn, golds in zip(parsed.turns, owned, strict=True):
        for call, gold in zip(turn, golds, strict=True):
            name, args = call["name"], call["arguments"]
            outcome = execute(name, json.loads(json.dumps(args)))
            if not outcome.ok:
                reasons.append(f"reference_call_error: {outcome.text[:300]}")
                continue
            outputs.append((name, outcome.text))
            assert gold is not None
            if not answer_verify(outcome.text, gold):
                reasons.append(f"gold_not_produced: {name} -> {outcome.text[:200]!r}, gold {gold!r}")
            else:
                produced[normalize(gold)] = outcome.text
            text = normalize(outcome.text)
            echoed = [leaf for leaf in _leaves(args) if leaf in text]
            if echoed:
                reasons.append(f"echoes_argument: {name} echoes {echoed[0]!r}")
    if reasons:
        return reasons
    left = solve_greedily(parsed.unsolved, outputs)
    if any(left.values()):
        reasons.append(f"unsolved_after_reference: {left}")
    for piece in parsed.answer.split(", "):
        source = produced.get(normalize(piece))
        if source is None or not answer_verify(source, piece):
            reasons.append(f"final_answer_mismatch: {piece!r} is not a verified sub-answer")
    if probes:
        for name, params in schemas.items():
            args = _probe_arguments(params)
            if args is None:
                continue
            outcome = execute(name, args)
            if CANARY in normalize(outcome.text):
                reasons.append(f"canary_echo: {name} shows its argument: {outcome.text[:200]!r}")
    return reasons


def own_code_executor(codes: Mapping[str, str]) -> Executor:
    """Run tool code in *this process*. ONLY for sources this generator wrote itself.

    Each source is compiled and exec'd in a fresh namespace (no state shared between tools or
    with the caller), but there is no isolation. Anything else goes to ``verify_in_sandbox``.
    """
    functions: dict[str, Callable[..., Any] | str] = {}

    def load(name: str) -> Callable[..., Any] | str:
        if name not in functions:
            namespace: dict[str, Any] = {"__builtins__": builtins}
            try:
                exec(compile(codes[name], f"<toolgen:{name}>", "exec"), namespace)
                fn = namespace[name]
                functions[name] = fn if callable(fn) else f"{name} is not a function"
            except Exception as exc:
                functions[name] = f"{type(exc).__name__}: {exc}"
        return functions[name]

    def execute(name: str, arguments: dict[str, Any]) -> Outcome:
        fn = load(name)
        if isinstance(fn, str):
            return Outcome(False, error_text(name, fn))
        try:
            return Outcome(True, format_result(fn(**arguments)))
        except Exception as exc:
            return Outcome(False, error_text(name, exc))

    return execute


def sandbox_executor(runner: Runner, codes: Mapping[str, str], *, timeout_s: float = 10.0) -> Executor:
    """Run each call through ``runner``: a fresh process per call in the runner's sandbox.

    A ``SandboxError`` from the runner propagates: a dead sandbox is not a bad task.
    """
    limits = RunLimits(timeout_s=timeout_s)

    def execute(name: str, arguments: dict[str, Any]) -> Outcome:
        result = runner(RunRequest(code=codes[name], call=FunctionCall(name, arguments), limits=limits))
        if result.status == "ok":
            return Outcome(True, result.value if result.value is not None else "None")
        return Outcome(False, error_text(name, result.error or result.status))

    return execute


@dataclass(frozen=True)
class Rejection:
    """A record that failed verification: its ``id`` and every reason, the first one being the one counted."""
    id: str
    reasons: tuple[str, ...]

    @property
    def code(self) -> str:
        """The reason code the rejection is counted under (its first reason's)."""
        return reason_code(self.reasons[0])


@dataclass
class SandboxReport:
    """What ``verify_in_sandbox`` kept and rejected.

    ``counts`` is rejections per reason code (a record counts once, under its first reason).
    """

    kept: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    calls: int = 0


def verify_in_sandbox(records: Iterable[Mapping[str, Any]], runner: Runner, *, timeout_s: float = 10.0,
                      probes: bool = True) -> SandboxReport:
    """Verify ``records`` by running every reference call (and one probe call per tool) through ``runner``.

    Many tasks share one sandbox; each call is a fresh process in it.
    """
    report = SandboxReport()

    def counting(inner: Executor) -> Executor:
        def execute(name: str, arguments: dict[str, Any]) -> Outcome:
            report.calls += 1
            return inner(name, arguments)
        return execute

    for record in records:
        codes = _loads(record.get("codes", {}))
        if not isinstance(codes, dict):
            reasons = ["malformed: codes must be an object"]
        else:
            reasons = check_record(record, counting(sandbox_executor(runner, codes, timeout_s=timeout_s)),
                                   probes=probes)
        if reasons:
            rejection = Rejection(str(record.get("id", "")), tuple(reasons))
            report.rejected.append(rejection)
            report.counts[rejection.code] = report.counts.get(rejection.code, 0) + 1
        else:
            report.kept.append(dict(record))
    return report
