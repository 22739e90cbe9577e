"""Episodes: one per task, played by a policy through the HTTP API, at bounded concurrency.

An episode the server could not serve (an HTTP error left after the client's retries, or
``info["status"] == "infra_error"``) or the policy could not play (its endpoint down) is kept
with its ``error`` and counted apart, never scored 0.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolgym.actions import action_from_wire
from toolgym.client import AsyncEnvClient
from toolgym.envs.actions import parse_action
from toolgym.errors import ToolGymError
from toolgym.eval.model import ModelEndpointError
from toolgym.eval.policies import Conversation, Policy
from toolgym.eval.tasks import EvalTask, task_seed

__all__ = ["EpisodeResult", "evaluate", "run_episode"]


@dataclass
class EpisodeResult:
    """One finished (or failed) episode, as written to the trajectories file."""

    task_id: str
    split: str
    question_type: str | None
    episode_id: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    terminated: bool = False
    truncated: bool = False
    error: str | None = None

    @property
    def total_reward(self) -> float:
        """The return: the sum of the step rewards."""
        return float(sum(self.rewards))

    def to_json(self, policy: str) -> dict[str, Any]:
        """One line of the trajectories file (``toolgym eval --out``)."""
        return {
            "task_id": self.task_id, "split": self.split, "question_type": self.question_type,
            "policy": policy, "episode_id": self.episode_id, "turns": len(self.actions),
            "return": self.total_reward, "metrics": self.metrics, "reason": self.reason,
            "terminated": self.terminated, "truncated": self.truncated, "error": self.error,
            "rewards": self.rewards, "statuses": self.statuses, "actions": self.actions,
            "observations": self.observations, "messages": self.messages, "tools": self.tools,
        }


def _history_message(action: dict[str, Any], turn: int) -> dict[str, Any]:
    """The assistant turn as the chat history keeps it: the calls the server ran, with their ids.

    The calls are parsed by the env's own parser; the ids are the ones its tool messages answer
    (``call_<turn>_<i>``).
    """
    parsed = parse_action(action_from_wire(action), turn)
    if not parsed.calls:
        return {"role": "assistant", "content": action.get("content") or ""}
    return {"role": "assistant", "content": parsed.content or None,
            "tool_calls": [c.to_openai() for c in parsed.calls]}


async def run_episode(client: AsyncEnvClient, env_id: str, task: EvalTask, policy: Policy, *, seed: int,
                      max_turns: int, options: Mapping[str, Any] | None = None) -> EpisodeResult:
    """One episode of ``task`` played by ``policy``, until the env ends it.

    ``max_turns`` steps is only a guard: the env enforces its own turn limit.
    """
    result = EpisodeResult(task_id=task.id, split=task.split, question_type=task.question_type)
    done = False
    try:
        reset = await client.reset(env_id, task.id, seed=task_seed(seed, task.id), options=dict(options or {}))
        result.episode_id = reset.episode_id
        result.messages = list(reset.observation.get("messages", []))
        result.tools = list(reset.observation.get("tools") or [])
        result.metrics = dict(reset.info.get("metrics", {}))
        conversation = Conversation(task, result.messages, result.tools, 0,
                                    random.Random(task_seed(seed, f"policy/{task.id}")))
        while not done and conversation.turn < max_turns:
            action = await policy.act(conversation)
            step = await client.step(reset.episode_id, action, expected_turn=conversation.turn)
            result.actions.append(action)
            result.observations.append(step.observation)
            result.rewards.append(step.reward)
            result.statuses.append(str(step.info.get("status", "ok")))
            result.metrics = dict(step.info.get("metrics", result.metrics))
            result.messages.append(_history_message(action, conversation.turn))
            result.messages.extend(step.observation.get("messages", []))
            conversation.turn += 1
            done = step.terminated or step.truncated
            result.terminated, result.truncated = step.terminated, step.truncated
            result.reason = step.info.get("reason")
            if step.info.get("status") == "infra_error":
                result.error = f"infra_error at turn {conversation.turn - 1}: {step.info.get('reason')}"
                break
        if not done and result.error is None:
            result.error = f"not finished after {max_turns} turns"
    except (ToolGymError, ModelEndpointError, ValueError, KeyError, TypeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if result.episode_id is not None and not done:
            try:
                await client.close(result.episode_id)
            except ToolGymError:
                pass
    return result


async def evaluate(client: AsyncEnvClient, env_id: str, tasks: Sequence[EvalTask], policy: Policy, *,
                   concurrency: int = 8, seed: int = 0, max_turns: int = 20,
                   options: Mapping[str, Any] | None = None,
                   on_result: Callable[[EpisodeResult], Awaitable[None] | None] | None = None,
                   ) -> list[EpisodeResult]:
    """One episode per task, at most ``concurrency`` at once; results in task order.

    ``on_result`` is called as each episode ends (e.g. to write it and advance a progress bar).
    """
    results: list[EpisodeResult | None] = [None] * len(tasks)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(tasks)):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await run_episode(client, env_id, tasks[i], policy, seed=seed, max_turns=max_turns,
                                       options=options)
            results[i] = result
            if on_result is not None:
                pending = on_result(result)
                if pending is not None:
                    await pending

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(tasks))))))
    return [r for r in results if r is not None]

