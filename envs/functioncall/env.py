"""``toolgym/FunctionCall-v0``: single-step function calling, scored as LoopTool or BFCL score it.

One episode is one question. Reset shows the task's messages and tools; the one step reads
the policy's answer (Qwen ``<tool_call>`` tags, a BFCL-style Python call list, or OpenAI
``tool_calls``), compares its calls with the gold, and ends the episode (``terminated``,
reason ``answered``). Nothing runs: the calls are verified, never executed, so the family
needs no sandbox and a step costs microseconds.
"""

from __future__ import annotations

import copy
import random
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from toolgym.envs.base import (
    Action,
    EnvFamily,
    Episode,
    Expandable,
    Judgeable,
    JudgeView,
    Observation,
    Runner,
    Step,
    Task,
    make_info,
)
from toolgym.envs.functioncall import grading
from toolgym.envs.functioncall.parsing import ParsedResponse, parse_response
from toolgym.envs.functioncall.records import gold_ast_of, validate_record
from toolgym.envs.functioncall.tasks import builtin_records
from toolgym.envs.functioncall.variants import make_variants
from toolgym.envs.functioncall.verify_bfcl import bfcl_check
from toolgym.envs.functioncall.verify_looptool import looptool_calls_match, looptool_text_match
from toolgym.errors import EpisodeFinished

__all__ = ["FunctionCallEpisode", "FunctionCallFamily", "FunctionCallOptions", "Verifier", "score"]

Verifier = Literal["looptool", "bfcl"]
ParseMode = Literal["exact", "lenient"]


@dataclass(frozen=True)
class FunctionCallOptions:
    """Reset options of ``toolgym/FunctionCall-v0``."""

    verifier: Verifier = field(
        default="looptool",
        metadata={
            "doc": "looptool: LoopTool's rule (same number of calls, same set of calls, lists as sets); "
            "bfcl: BFCL's AST checker (types, required/optional parameters, allowed values)."
        },
    )
    parse: ParseMode = field(
        default="exact",
        metadata={
            "doc": "exact (default): a call is a '<tool_call>\\n{json}\\n</tool_call>' block, newlines "
            "required, as LoopTool's regex reads it; tags it does not read are ignored and counted in "
            "info.unparsed_tool_call_tags. lenient: any whitespace (or none) around the JSON is accepted."
        },
    )


@dataclass(frozen=True)
class Score:
    match: bool
    errors: tuple[str, ...] = ()


def score(parsed: ParsedResponse, record: Mapping[str, Any], verifier: Verifier) -> Score:
    """Whether a parsed response earns reward 1 on a validated record.

    An invalid action scores 0 under both verifiers (BFCL's irrelevance scoring would count an
    undecodable answer as "no call"; here a broken call is never a right answer).
    """
    if not parsed.valid:
        return Score(False, parsed.problems)
    if record.get("gold_text"):
        if looptool_text_match(parsed.makes_call):
            return Score(True)
        return Score(False, ("the gold is a text answer, the response makes a tool call",))
    predicted = parsed.calls_as_dicts()
    if verifier == "bfcl":
        verdict = bfcl_check(predicted, gold_ast_of(record), record["tools"])
        return Score(verdict.valid, verdict.errors)
    if looptool_calls_match(predicted, record["gold_calls"]):
        return Score(True)
    return Score(
        False,
        (f"the calls do not match the gold ({len(predicted)} given, {len(record['gold_calls'])} expected)",),
    )


class FunctionCallEpisode(Episode):
    """One question, one answer. Deterministic: the reward depends on the action alone."""

    def __init__(self, record: Mapping[str, Any], options: FunctionCallOptions) -> None:
        self._record = record
        self._options = options
        self._turn = 0

    @property
    def turn(self) -> int:
        """0 before the answer, 1 after: an episode has exactly one step."""
        return self._turn

    def reset(self) -> tuple[Observation, dict[str, Any]]:
        """The record's messages and tools, deep-copied so that a caller cannot alter the task."""
        observation = Observation(
            messages=copy.deepcopy(list(self._record["messages"])),
            tools=copy.deepcopy(list(self._record["tools"])),
        )
        return observation, make_info(verifier=self._options.verifier)

    def step(self, action: Action) -> Step:
        """Score the one answer (reward 1 or 0) and end the episode; nothing is executed.

        Raises ``EpisodeFinished`` on a second step.
        """
        if self._turn >= 1:
            # The server refuses a step after the end first; this guards direct use.
            raise EpisodeFinished("", "answered")
        parsed = parse_response(action, lenient=self._options.parse == "lenient")
        result = score(parsed, self._record, self._options.verifier)
        self._turn = 1
        reward = 1.0 if result.match else 0.0
        n_gold = 0 if self._record.get("gold_text") else len(self._record["gold_calls"])
        info = make_info(
            status="ok" if parsed.valid else "invalid_action",
            reward_components={"match": reward},
            metrics={"num_calls": float(len(parsed.calls)), "num_gold_calls": float(n_gold)},
            reason="answered",
            verifier=self._options.verifier,
            action_form=parsed.form,
            parsed_calls=parsed.calls_as_dicts(),
            errors=list(result.errors),
        )
        if parsed.unread_tags:
            info["unparsed_tool_call_tags"] = parsed.unread_tags
            info["parse_note"] = parsed.parse_note
        return Step(Observation(messages=[]), reward, True, False, info)


class FunctionCallFamily(EnvFamily, Judgeable, Expandable):
    """``toolgym/FunctionCall-v0``: LoopTool's single-step function calling, verified and never executed.

    Needs no sandbox: an answer is compared with the gold calls (``looptool`` or ``bfcl`` rule),
    which also lets the family grade, judge and grow tasks for the data loop.
    """
    env_id = "toolgym/FunctionCall-v0"
    description = (
        "Single-step function calling (LoopTool, arXiv 2511.09148): answer a question with the right "
        "tool calls, or with text when no call fits; verified, never executed."
    )
    action_format = (
        "The assistant turn: reasoning up to </think> is dropped; calls as Qwen tags "
        '<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call> (one block per call), or a Python '
        'call list [get_weather(city="Paris"), add(a=1, b=2)] (literals only), or an OpenAI assistant '
        "message with tool_calls; plain text for a text answer."
    )
    observation_format = (
        "reset: the task's messages (system + user) and tools (OpenAI schemas); step: no messages."
    )
    reward_spec = (
        "1 or 0. looptool (default): same number of calls and the same set of calls, arguments compared "
        "with key order ignored and lists as sets (LoopTool's rule, not a strict multiset); bfcl: BFCL's "
        "AST checker. A text gold: 1 iff no tool call. An invalid action: 0, status invalid_action."
    )
    record_format = (
        "{messages, tools, gold_calls: [{name, arguments}]} or {messages, tools, gold_text: true}; "
        "optional id, gold_ast (BFCL possible answers [{func: {param: [allowed...]}}]), slots, metadata"
    )
    options_type = FunctionCallOptions
    needs_sandbox = False

    def validate_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalize a record (``tasks.validate_record``); ``ValidationFailed`` names the field."""
        return validate_record(record)

    def task_metadata(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Tool names and the record's own ``metadata``; nothing that says what the gold is."""
        out: dict[str, Any] = {"tools": [t["function"]["name"] for t in record["tools"]]}
        if record.get("metadata"):
            out["metadata"] = copy.deepcopy(record["metadata"])
        return out

    def builtin_records(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """The hand-written tasks, then the ones derived from the tool generator."""
        return builtin_records()

    def start(self, task: Task, options: Any, runner: Runner | None, rng: random.Random) -> Episode:
        """A new episode on ``task``; ``runner`` and ``rng`` are unused (nothing runs, scoring is deterministic)."""
        return FunctionCallEpisode(task.record, options)

    def variants(self, record: Mapping[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
        """Up to ``n`` new verified tasks from ``record``, a value substituted in the query and the gold.

        The substitution is consistent across both (LoopTool's EDDE without an LLM; see
        ``variants.py``).
        """
        return make_variants(record, n, rng)

    def gold_answer(self, record: Mapping[str, Any]) -> Action:
        """The gold calls as Qwen tags (a text gold: a sentence without a call)."""
        return grading.gold_answer(record)

    def grade(self, task: Task, action: Action) -> bool:
        """Scores 1 under *every* verifier (``looptool`` and ``bfcl``).

        A grown variant must be right whichever one a trainer picks.
        """
        parsed = parse_response(action)
        return all(score(parsed, task.record, v).match for v in typing.get_args(Verifier))

    def judge_view(self, task: Task, response: Action) -> JudgeView:
        """The task's messages and tools; the label and the answer as tags (``grading``)."""
        return grading.judge_view(task.record, response)
