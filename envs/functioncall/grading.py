"""FunctionCall's data-loop capabilities: the gold as an answer and the judge's view.

The gold is written the way the policy is asked to answer, as Qwen ``<tool_call>`` tags, so
the judge compares like with like (LoopTool's JGLV shows the label as "Response 1" and the
policy's answer as "Response 2"), and a grown variant is kept only if those tags score 1
under *both* of the env's verifiers (``FunctionCallFamily.grade``, beside ``score``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from toolgym.envs.base import Action, JudgeView

__all__ = ["TEXT_ANSWER", "TEXT_LABEL", "gold_answer", "judge_view", "response_text", "tag_calls"]

TEXT_ANSWER = "None of the available tools fits this request, so I will answer without calling one."
"""What the gold of a text task looks like as an answer: any text without a call scores 1."""

TEXT_LABEL = "(a plain-text answer that calls no tool: no available tool fits the request)"
"""How a judge is shown the label of a text task, which has no gold text of its own."""


def tag_calls(calls: Iterable[Mapping[str, Any]]) -> str:
    """Calls ``{"name", "arguments"}`` as Qwen tags, one ``<tool_call>`` block each."""
    return "\n".join(
        "<tool_call>\n" + json.dumps({"name": c["name"], "arguments": c["arguments"]}, ensure_ascii=False)
        + "\n</tool_call>"
        for c in calls
    )


def gold_answer(record: Mapping[str, Any]) -> str:
    """The gold of a validated record as a policy's answer."""
    return TEXT_ANSWER if record.get("gold_text") else tag_calls(record["gold_calls"])


def response_text(action: Action) -> str:
    """An action as the judge reads it: the content, then any OpenAI tool calls as tags.

    Arguments that are JSON text are decoded, so both forms read the same.
    """
    if isinstance(action, str):
        return action
    calls = []
    for call in action.tool_calls:
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        calls.append({"name": function.get("name"), "arguments": arguments})
    return "\n".join(part for part in (action.content or "", tag_calls(calls)) if part)


def judge_view(record: Mapping[str, Any], response: Action) -> JudgeView:
    """The task's messages and tools, its label as tags (or ``TEXT_LABEL``), the answer."""
    label = TEXT_LABEL if record.get("gold_text") else tag_calls(record["gold_calls"])
    return JudgeView(messages=list(record["messages"]), tools=list(record["tools"]), label=label,
                     response=response_text(response))
