"""The trainer adapters' trainer-free parts, in the project's own venv: the Hermes text protocol, and that
``import toolgym`` never pulls an adapter in (each imports only with its trainer installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from toolgym.integrations._shared import tool_responses, with_tools_system_prompt

TOOL = {"type": "function", "function": {"name": "echo", "description": "Echo.", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}


def test_the_tools_go_into_the_system_message_in_hermes_form() -> None:
    messages = [{"role": "system", "content": "You call tools."}, {"role": "user", "content": "Hi"}]
    out = with_tools_system_prompt(messages, [TOOL])
    assert messages[0]["content"] == "You call tools.", "the input is not changed"
    system = out[0]["content"]
    assert system.startswith("You call tools.\n\n# Tools\n")
    assert '<tools>\n{"type": "function", "function": {"name": "echo"' in system and "</tools>" in system
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in system
    assert out[1:] == messages[1:]


def test_a_system_message_is_added_when_there_is_none_and_nothing_changes_without_tools() -> None:
    user = [{"role": "user", "content": "Hi"}]
    out = with_tools_system_prompt(user, [TOOL])
    assert out[0]["role"] == "system" and out[0]["content"].startswith("# Tools") and out[1:] == user
    assert with_tools_system_prompt(user, []) == user


def test_tool_results_become_one_user_turn_of_tool_response_blocks() -> None:
    observation = [{"role": "tool", "content": "48210"}, {"role": "tool", "content": ""},
                   {"role": "user", "content": "Turns left: 2"}]
    assert tool_responses(observation) == (
        "<tool_response>\n48210\n</tool_response>\n<tool_response>\n\n</tool_response>\nTurns left: 2")


def test_import_toolgym_imports_no_adapter() -> None:
    code = ("import sys, toolgym, toolgym.client, toolgym.integrations\n"
            "print(sorted(m for m in sys.modules if m.startswith('toolgym.integrations.')"
            " or m.split('.')[0] in ('skyrl_gym', 'verifiers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(("adapter", "trainer"), [("skyrl", "skyrl_gym"), ("verifiers", "verifiers")])
def test_an_adapter_needs_its_trainer(adapter: str, trainer: str) -> None:
    code = f"import toolgym.integrations.{adapter}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and f"No module named '{trainer}" in out.stderr, out.stderr
