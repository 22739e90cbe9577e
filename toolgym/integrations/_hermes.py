"""The Hermes/Qwen text protocol for policies that act in raw text, shared by the SkyRL and verifiers adapters.

A raw-text policy gets no ``tools=`` argument from its trainer, so the tool schemas go into the
system message and tool results come back as ``<tool_response>`` blocks, the form Qwen's and
Hermes' chat templates render; ToolGym's env families parse the ``<tool_call>`` blocks it answers
with.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["tool_responses", "tools_system_prompt"]


def tools_system_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` (copied) with ``tools`` listed in the system message, in the Hermes ``<tools>`` form."""
    out = [dict(m) for m in messages]
    if not tools:
        return out
    block = (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments"
        " within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0].get('content') or ''}\n\n{block}".lstrip()
    else:
        out.insert(0, {"role": "system", "content": block})
    return out


def tool_responses(messages: list[dict[str, Any]]) -> str:
    """An observation's messages as one user turn: each tool result in a ``<tool_response>`` block.

    For a trainer whose conversation has no tool role to give them (the assistant's calls were
    text, so there is no ``tool_call_id`` to answer).
    """
    parts = []
    for message in messages:
        content = str(message.get("content") or "")
        parts.append(f"<tool_response>\n{content}\n</tool_response>" if message.get("role") == "tool" else content)
    return "\n".join(parts)
