"""``toolgym/ToolUse-v0``: FTRL's automatically built tool environments (docs/methods.md#ftrl).

A task is a question, a set of tools given as OpenAI schemas, and the Python source of every
tool. The policy answers with tool calls (Qwen/Hermes ``<tool_call>`` tags, several per turn,
or OpenAI ``tool_calls``); each call runs the tool's source in the episode's sandbox (a fresh
process per call, ``tool_timeout_s`` each; a turn's calls run at once) and comes back as a ``tool`` message. A turn
without a valid call is the final answer and ends the episode; 20 turns is the limit.

Rewards follow FTRL's code exactly (``verifier.py``): a call solves at most one still-unsolved
gold sub-answer of its tool; the turn's reward is the chosen variant of (solved, calls); the
final turn is scored on its content. Where FTRL is silent, the choices are:

- A call to a tool the task does not have, or with arguments the tool rejects, is a valid
  call that fails: it counts in ``n`` and returns FTRL's error message
  ``an error occured when call {name}: {error}`` (their spelling).
- A tool's return value reaches the verifier whole, however long: FTRL's substring check reads
  all of it. What the policy is shown is cut by the server (``max_output_chars``, with
  ``info["output_truncated"]``). Only a value over ``max_tool_output_bytes`` (a memory cap,
  16 MiB by default) is refused, as a failed call whose message names that option.
- At most ``MAX_CALLS_PER_TURN`` calls run per turn; further ones are answered with an error
  and still count, so flooding a turn with calls never pays.
- ``strict`` (off by default, so the paper's numbers reproduce) refuses credit for a gold
  sub-answer that the call's own arguments already contained: FTRL's substring check would
  otherwise credit a tool that echoes its input.
- A finished episode *succeeded* when every gold was solved and the final answer was right.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolgym.envs.actions import ParsedCall, parse_action
from toolgym.envs.base import (
    Action,
    EnvFamily,
    Episode,
    Observation,
    Runner,
    Step,
    Task,
    make_info,
)
from toolgym.envs.runner import FunctionCall, RunLimits, RunRequest, RunResult, run_all
from toolgym.envs.tooluse.verifier import (
    RewardVariant,
    answer_verify,
    count_golds,
    episode_metrics,
    error_text,
    final_turn_reward,
    tool_turn_reward,
)
from toolgym.errors import ValidationFailed

__all__ = ["MAX_CALLS_PER_TURN", "ToolUseEpisode", "ToolUseFamily", "ToolUseOptions"]

MAX_CALLS_PER_TURN = 32
TOOL_MEMORY_BYTES = 512 * 1024 * 1024
TOOL_OUTPUT_BYTES = 16 * 1024 * 1024
"""Default hard cap on one tool's return value (``max_tool_output_bytes``)."""
MAX_TOOL_OUTPUT_BYTES = 64 * 1024 * 1024
"""The highest ``max_tool_output_bytes`` a reset may ask for."""


@dataclass(frozen=True)
class ToolUseOptions:
    """Reset options of ``toolgym/ToolUse-v0``."""

    reward: RewardVariant = field(
        default="solve_f1",
        metadata={"doc": "step reward: solve_f1 2k/(n+1), solve_precision k/n, solve_rate k, solve_pr k^2/n"},
    )
    strict: bool = field(
        default=False, metadata={"doc": "refuse credit when the gold was already in the call's arguments"}
    )
    max_turns: int = field(default=20, metadata={"doc": "turn limit (FTRL: 20)", "min": 1, "max": 200})
    tool_timeout_s: float = field(
        default=10.0, metadata={"doc": "time limit of one tool call (FTRL: 10 s)", "min": 0.1, "max": 120}
    )
    max_tool_output_bytes: int = field(
        default=TOOL_OUTPUT_BYTES,
        metadata={
            "doc": "hard memory cap on one tool's return value (bytes of its UTF-8 JSON form); the verifier"
            " reads the whole value below it, a larger one is a failed call (what the policy is shown is"
            " cut separately, by the server's max_output_chars)",
            "min": 1024,
            "max": MAX_TOOL_OUTPUT_BYTES,
        },
    )


def _json_field(record: Mapping[str, Any], name: str, kind: type) -> Any:
    """FTRL's files may carry ``tools``, ``codes`` and ``unsolved_set`` as JSON strings."""
    if name not in record:
        raise ValidationFailed(f"missing field {name!r}", field=name)
    value = record[name]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValidationFailed(f"field {name!r} is a string but not valid JSON", field=name) from None
    if not isinstance(value, kind):
        raise ValidationFailed(f"field {name!r} must be a {kind.__name__}", field=name)
    return value


def _tool_name(schema: Any, index: int) -> str:
    fn = schema.get("function", schema) if isinstance(schema, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ValidationFailed(f"tools[{index}] has no function name", field="tools")
    return name


class ToolUseFamily(EnvFamily):
    """``toolgym/ToolUse-v0``: FTRL's tool environments, a question answered by calling Python tools.

    The tools run in the episode's sandbox; each call's output is checked against the task's gold
    sub-answers (``unsolved_set``), which gives step-wise rewards.
    """
    env_id = "toolgym/ToolUse-v0"
    description = (
        "FTRL's tool environments: answer a question by calling locally deployed Python tools;"
        " step-wise verifiable rewards from gold sub-answers."
    )
    action_format = (
        "The raw assistant turn with Qwen/Hermes <tool_call>{\"name\", \"arguments\"}</tool_call> blocks"
        " (several allowed), or {content, tool_calls} in OpenAI form. A turn with no valid call is the"
        " final answer."
    )
    observation_format = (
        "reset: the system and user messages plus 'tools' (OpenAI schemas); step: one 'tool' message per call."
    )
    reward_spec = (
        "Per turn with calls: solve_f1 2k/(n+1) (default), solve_precision k/n, solve_rate k, solve_pr k^2/n,"
        " k = golds solved this turn, n = valid calls. Final turn: empty -0.5; leftover tags -0.3;"
        " gold answer in the content 1/(1+u); all golds solved 0.5; else 0 (FTRL)."
    )
    record_format = (
        "{messages, tools, codes: {tool: python source}, answer, unsolved_set: {tool: [gold, ...]}};"
        " optional id, split, reference_solution, question_type. tools/codes/unsolved_set may be JSON strings."
    )
    options_type = ToolUseOptions
    needs_sandbox = True

    def validate_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalize an FTRL record; ``ValidationFailed`` names the bad field.

        ``tools``, ``codes`` and ``unsolved_set`` may come as JSON strings, as in FTRL's files. Tool
        code is compiled for its syntax only, never run here; every tool needs code, and at least
        one gold must exist.
        """
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValidationFailed("field 'messages' must be a non-empty list of chat messages", field="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or m.get("role") not in ("system", "user", "assistant", "tool"):
                raise ValidationFailed(f"messages[{i}] needs a role of system/user/assistant/tool", field="messages")
            if not isinstance(m.get("content", ""), str):
                raise ValidationFailed(f"messages[{i}].content must be a string", field="messages")
        if not any(m.get("role") == "user" for m in messages):
            raise ValidationFailed("field 'messages' has no user message", field="messages")
        tools = _json_field(record, "tools", list)
        names = [_tool_name(t, i) for i, t in enumerate(tools)]
        tools = [t if "function" in t else {"type": "function", "function": t} for t in tools]
        codes = _json_field(record, "codes", dict)
        for name, source in codes.items():
            if not isinstance(source, str):
                raise ValidationFailed(f"codes[{name!r}] must be Python source text", field="codes")
            try:
                compile(source, f"<tool {name}>", "exec")  # syntax only; it never runs here
            except (SyntaxError, ValueError) as exc:
                raise ValidationFailed(f"codes[{name!r}] is not valid Python: {exc}", field="codes") from None
        missing = [n for n in names if n not in codes]
        if missing:
            raise ValidationFailed(f"tools without code: {missing}", field="codes")
        unsolved = _json_field(record, "unsolved_set", dict)
        golds: dict[str, list[str]] = {}
        for name, values in unsolved.items():
            if not isinstance(values, list) or not all(isinstance(v, str | int | float) for v in values):
                raise ValidationFailed(f"unsolved_set[{name!r}] must be a list of gold answers", field="unsolved_set")
            golds[str(name)] = [str(v) for v in values]
        if not any(golds.values()):
            raise ValidationFailed("unsolved_set has no gold answer (FTRL requires at least one)", field="unsolved_set")
        answer = record.get("answer")
        if not isinstance(answer, str | int | float) or isinstance(answer, bool):
            raise ValidationFailed("field 'answer' must be a string", field="answer")
        out: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "tools": tools,
            "codes": dict(codes),
            "answer": str(answer),
            "unsolved_set": golds,
        }
        for key in ("reference_solution", "question_type", "scaling"):
            if key in record:
                out[key] = record[key]
        return out

    def task_metadata(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Question type, tool names and the number of golds; never the golds themselves."""
        return {
            "question_type": record.get("question_type"),
            "tools": [t["function"]["name"] for t in record["tools"]],
            "golds": count_golds(record["unsolved_set"]),
        }

    def builtin_records(self) -> list[tuple[str, dict[str, Any]]]:
        """The hand-written tasks of ``builtin.py``."""
        from toolgym.envs.tooluse.builtin import builtin_tasks

        return builtin_tasks()

    def episode_success(self, total_reward: float, last_info: Mapping[str, Any]) -> bool:
        """Every gold found (``solve_rate`` 1) and the final answer correct.

        The return alone cannot say: per-turn rewards are fractional and the final turn's can be
        negative.
        """
        return bool(last_info.get("metrics", {}).get("solve_rate") == 1.0 and last_info.get("answer_correct"))

    def start(self, task: Task, options: ToolUseOptions, runner: Runner | None, rng: random.Random) -> Episode:
        """A new episode on ``task``; the server always passes a runner, since the family needs a sandbox."""
        assert runner is not None
        return ToolUseEpisode(task, options, runner)


class ToolUseEpisode(Episode):
    """One FTRL rollout: turns of tool calls run in the sandbox, until a turn without a valid call or ``max_turns``."""
    def __init__(self, task: Task, options: ToolUseOptions, runner: Runner) -> None:
        self._record = task.record
        self._options = options
        self._runner = runner
        self._unsolved = {k: list(v) for k, v in task.record["unsolved_set"].items()}
        self._golds = count_golds(self._unsolved)
        self._solved = 0
        self._calls = 0
        self._turn = 0

    @property
    def turn(self) -> int:
        """Assistant turns taken so far."""
        return self._turn

    def _metrics(self) -> dict[str, float]:
        return episode_metrics(self._solved, self._calls, self._golds)

    def reset(self) -> tuple[Observation, dict[str, Any]]:
        """The task's messages and tools; the metrics start at zero."""
        observation = Observation(
            messages=[dict(m) for m in self._record["messages"]], tools=list(self._record["tools"])
        )
        return observation, make_info(metrics=self._metrics())

    def _request(self, call: ParsedCall, index: int) -> RunRequest | str:
        """The run for one call, or the tool message content when the call never runs."""
        if index >= MAX_CALLS_PER_TURN:
            why = f"not run, over {MAX_CALLS_PER_TURN} calls in one turn"
            return error_text(call.name, why)
        source = self._record["codes"].get(call.name)
        if source is None:
            return error_text(call.name, f"no tool named {call.name!r} in this environment")
        try:
            json.dumps(call.arguments)
        except (TypeError, ValueError):
            return error_text(call.name, "arguments are not JSON")
        return RunRequest(
            code=source, call=FunctionCall(call.name, call.arguments),
            limits=RunLimits(timeout_s=self._options.tool_timeout_s, memory_bytes=TOOL_MEMORY_BYTES,
                             max_value_bytes=self._options.max_tool_output_bytes),
        )

    def _content(self, call: ParsedCall, result: RunResult) -> tuple[str, bool]:
        """The tool message content for one call's result, and whether it timed out."""
        cap = self._options.max_tool_output_bytes
        if result.status == "ok" and result.value is not None:
            return result.value, False
        if result.value_truncated:
            why = (f"the tool returned more than {cap} bytes (max_tool_output_bytes; raise it in the"
                   f" reset options, up to {MAX_TOOL_OUTPUT_BYTES})")
            return error_text(call.name, why), False
        return error_text(call.name, result.error or result.status), result.status == "timeout"

    def _run_calls(self, calls: list[ParsedCall]) -> list[tuple[str, bool]]:
        """Each call's tool message content and whether it timed out, in call order.

        A turn's calls are independent (FTRL runs them one by one, each its own tool process): they
        run at once when the runner can (``run_all``), which changes the wall time only.
        """
        prepared = [self._request(call, i) for i, call in enumerate(calls)]
        requests = [p for p in prepared if isinstance(p, RunRequest)]
        results = iter(run_all(self._runner, requests))
        return [
            self._content(call, next(results)) if isinstance(p, RunRequest) else (p, False)
            for call, p in zip(calls, prepared, strict=True)
        ]

    def step(self, action: Action) -> Step:
        """One assistant turn.

        A turn with calls runs each one and credits an output that contains a gold its tool has not
        yet produced (with ``strict``, one the arguments do not already contain), rewarded by the
        ``options.reward`` rule; ``max_turns`` truncates. A turn without a valid call is the final
        answer and ends the episode (FTRL's final-turn reward). Every call runs before any state
        changes, so a ``SandboxError`` leaves the episode as it was.
        """
        turn = self._turn
        parsed = parse_action(action, turn)
        if parsed.calls:
            # Run every call first: if the sandbox fails, nothing below has changed.
            outputs = self._run_calls(parsed.calls)
            solved = 0
            per_call = []
            for call, (content, _) in zip(parsed.calls, outputs, strict=True):
                golds = self._unsolved.get(call.name, [])
                hit = None
                for gold in golds:
                    if not answer_verify(content, gold):
                        continue
                    if self._options.strict and answer_verify(json.dumps(call.arguments, ensure_ascii=False), gold):
                        continue
                    hit = gold
                    break
                if hit is not None:
                    golds.remove(hit)
                    solved += 1
                per_call.append(hit is not None)
            n = len(parsed.calls)
            self._solved += solved
            self._calls += n
            self._turn += 1
            reward = tool_turn_reward(self._options.reward, solved, n)
            truncated = self._turn >= self._options.max_turns
            timed_out = any(t for _, t in outputs)
            info = make_info(
                status="timeout" if timed_out else "ok",
                reward_components={"solved": solved, "calls": n, self._options.reward: reward},
                metrics=self._metrics(),
                reason="max_turns" if truncated else None,
                calls_solved=per_call,
            )
            messages = [
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}
                for call, (content, _) in zip(parsed.calls, outputs, strict=True)
            ]
            return Step(Observation(messages=messages), reward, False, truncated, info)

        unsolved_before = count_golds(self._unsolved)
        reward, rule = final_turn_reward(parsed.content, self._record.get("answer"), unsolved_before)
        self._turn += 1
        info = make_info(
            status="invalid_action" if parsed.skipped_calls or rule == "malformed_tool_call" else "ok",
            reward_components={rule: reward},
            metrics=self._metrics(),
            # A final answer ends the episode ("answered"); an empty turn or one whose calls all
            # failed to parse ends it too, without an answer ("no_tool_call").
            reason="answered" if rule not in ("empty_response", "malformed_tool_call") else "no_tool_call",
            answer_correct=rule == "answer_correct",
        )
        return Step(Observation(messages=[]), reward, True, False, info)
