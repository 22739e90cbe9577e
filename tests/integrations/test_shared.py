"""toolgym.integrations._shared without any trainer: the helpers every adapter builds on, against a
real server (process backend) where an episode is involved."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from toolgym.client import RetryPolicy
from toolgym.envs.actions import parse_action
from toolgym.errors import TaskNotFound
from toolgym.integrations._shared import (
    CALL_TOOL_SCHEMA,
    EpisodeRun,
    is_infra_failure,
    make_client,
    parse_tool_calls,
    run_sync,
    task_prompt,
    tool_function,
    tools_system_prompt,
)

ENV = "toolgym/ToolUse-v0"
SCHEMA = {"type": "function", "function": {
    "name": "get_company", "description": "Look a company up.",
    "parameters": {"type": "object", "required": ["company"], "properties": {
        "company": {"type": "string", "description": "its name"},
        "year": {"type": "integer", "description": "as of"}}}}}


def test_tool_function_carries_the_schema_and_passes_only_given_arguments() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    fn = tool_function(SCHEMA, lambda name, args: seen.append((name, args)) or "done")
    assert fn.__name__ == "get_company"
    params = inspect.signature(fn).parameters
    assert params["company"].annotation is str and params["company"].default is inspect.Parameter.empty
    assert params["year"].annotation == int | None and params["year"].default is None
    assert fn.__doc__ == "Look a company up.\n\nArgs:\n    company: its name\n    year: as of"
    assert fn(company="Brightwell") == "done" and seen == [("get_company", {"company": "Brightwell"})]
    with pytest.raises(ValueError, match="cannot be a Python name"):
        tool_function({"type": "function", "function": {"name": "bad-name"}}, lambda n, a: "")


def test_the_prompt_lists_the_tools_and_the_parser_agrees_with_the_server() -> None:
    prompt = tools_system_prompt([SCHEMA], system="You call tools.")
    assert prompt.startswith("You call tools.\n\n# Tools") and json.dumps(SCHEMA) in prompt
    text = 'Looking.<tool_call>{"name": "get_company", "arguments": {"company": "B"}}</tool_call><tool_call>{bad' \
           "</tool_call><|im_end|>"
    message = parse_tool_calls(text)
    server = parse_action(text)
    assert message.content == server.content == "Looking."
    assert list(message.tool_calls) == [c.to_openai() for c in server.calls]
    assert parse_tool_calls("The answer is 4.<|im_end|>").tool_calls == ()
    listed = task_prompt({"messages": [{"role": "user", "content": "Q?"}], "tools": [SCHEMA]})
    assert listed.startswith("Q?\n\nCall these tools through call_tool(name, arguments):") and "get_company" in listed
    assert CALL_TOOL_SCHEMA["function"]["parameters"]["required"] == ["name", "arguments"]


def test_an_episode_return_and_an_infra_fault_kept_apart(process_server: Any) -> None:
    client = make_client(process_server.base_url, None, RetryPolicy(max_retries=0))
    maker = {"id": "c0", "type": "function",
             "function": {"name": "find_manufacturer", "arguments": json.dumps({"product": "Halcyon drone"})}}

    async def play() -> EpisodeRun:
        run = EpisodeRun(client, ENV, "tu-multi-1")
        assert await run.reset()
        first = await run.step(parse_tool_calls(f"<tool_call>{json.dumps(maker['function'])}</tool_call>"))
        assert first is not None and "Brightwell Dynamics" in json.dumps(first.observation)
        await run.step("Imara Solberg")
        return run

    done = run_sync(play())
    assert done.done and done.infra_error is None and done.turn == 2
    assert done.episode_return == sum(done.rewards) and done.episode_return is not None

    with pytest.raises(TaskNotFound):  # the caller's mistake surfaces; it is no infrastructure fault
        run_sync(EpisodeRun(client, ENV, "no-such-task").reset())

    cut = EpisodeRun(client, ENV, "tu-multi-1")
    assert run_sync(cut.reset())
    process_server.stop()  # the server goes away mid-episode
    assert run_sync(cut.step("Imara Solberg")) is None
    assert cut.infra_error is not None and cut.episode_return is None, "masked, never a return of 0"
    assert run_sync(cut.step("again")) is None, "nothing more is sent"


def test_which_errors_are_infrastructure() -> None:
    from toolgym import errors

    assert is_infra_failure(errors.SandboxError("dead"))
    assert is_infra_failure(errors.Unavailable("down"))
    assert is_infra_failure(errors.EpisodeNotFound("ep-1"))
    assert not is_infra_failure(errors.ValidationFailed("bad option"))
    assert not is_infra_failure(ValueError("not ours"))
