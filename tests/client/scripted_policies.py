"""Scripted policies for the client tests (imported by name: pytest puts this folder on
``sys.path``), and FTRL's reward rules written out by hand.

The policies read only what a policy sees (the observation) and know the answers of the
built-in tasks, which the tests import from the env packages: a ToolUse policy plays a task's
``reference_solution`` and then answers; a FunctionCall policy emits the gold calls. The
expected rewards are FTRL's formulas (docs/methods.md#ftrl) computed here, independently of the env's
own verifier, so a test comparing the two checks the whole path server -> HTTP -> client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toolgym.envs.functioncall.tasks import builtin_records as functioncall_records
from toolgym.envs.tooluse.builtin import builtin_tasks

TOOLUSE = "toolgym/ToolUse-v0"
CODEMATH = "toolgym/CodeMath-v0"
FUNCTIONCALL = "toolgym/FunctionCall-v0"


def _question(messages: list[dict[str, Any]]) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


TOOLUSE_TASKS: dict[str, dict[str, Any]] = {r["id"]: r for _, r in builtin_tasks()}
TOOLUSE_SPLITS: dict[str, str] = {r["id"]: s for s, r in builtin_tasks()}
_TOOLUSE_BY_QUESTION = {_question(r["messages"]): r for r in TOOLUSE_TASKS.values()}
FUNCTIONCALL_TASKS: dict[str, dict[str, Any]] = {r["id"]: r for _, r in functioncall_records()}
FUNCTIONCALL_SPLITS: dict[str, str] = {r["id"]: s for s, r in functioncall_records()}
_FUNCTIONCALL_BY_QUESTION = {_question(r["messages"]): r for r in FUNCTIONCALL_TASKS.values()}


def tool_calls_text(calls: list[dict[str, Any]]) -> str:
    """Qwen/Hermes ``<tool_call>`` blocks, one per call."""
    return "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


def ftrl_turn_reward(variant: str, solved: int, calls: int) -> float:
    """FTRL's per-turn rewards (``compute_solve_*``), k golds solved by n valid calls."""
    return {
        "solve_f1": 2 * solved / (calls + 1),
        "solve_precision": solved / calls,
        "solve_rate": float(solved),
        "solve_pr": solved * solved / calls,
    }[variant]


def reference_rewards(task_id: str, variant: str = "solve_f1") -> list[float]:
    """The rewards of playing a task's reference solution (every call solves one gold), then
    answering with the gold answer (1/(1+u) with u = 0 unsolved golds left)."""
    plan = TOOLUSE_TASKS[task_id]["reference_solution"]
    return [ftrl_turn_reward(variant, len(turn), len(turn)) for turn in plan] + [1.0]


def reference_actions(task_id: str) -> list[str]:
    record = TOOLUSE_TASKS[task_id]
    return [tool_calls_text(turn) for turn in record["reference_solution"]] + [f"The answer is {record['answer']}."]


@dataclass
class ToolUsePolicy:
    """Plays the reference solution of whichever built-in ToolUse task the reset showed.

    Works under a vector env's autoreset: a reset observation (it carries ``tools``) starts a
    new plan; after the final answer it sends filler, which the autoreset step ignores."""

    task_id: str | None = None
    turn: int = 0

    def __call__(self, observation: dict[str, Any]) -> str:
        if "tools" in observation:
            self.task_id = _TOOLUSE_BY_QUESTION[_question(observation["messages"])]["id"]
            self.turn = 0
        if self.task_id is None:
            return "nothing to do"
        actions = reference_actions(self.task_id)
        action = actions[min(self.turn, len(actions) - 1)]
        self.turn += 1
        return action


def functioncall_action(observation: dict[str, Any]) -> str:
    """The gold calls of the built-in FunctionCall task the reset showed (text for a text gold)."""
    record = _FUNCTIONCALL_BY_QUESTION[_question(observation["messages"])]
    if record.get("gold_text"):
        return "I can't do that with the tools I have."
    return tool_calls_text(record["gold_calls"])

