"""ToolGym episodes as a ``verifiers.v1`` environment (verifiers 0.4, the stack prime-rl trains with).

``load_environment(env_id, base_url=..., api_key=...)`` returns a ``verifiers.v1.Env`` whose
taskset lists the ToolGym server's tasks of ``env_id`` and whose ``run`` plays one ToolGym
episode per rollout, the env playing the user (as verifiers' own OpenEnv and TextArena envs do):
the model's reply is sent as the raw assistant turn, ToolGym's observation comes back as the
next user turn (a tool result as a ``<tool_response>`` block), and the sum of ToolGym's step
rewards is the trace's ``toolgym_reward``.

Two things verifiers 0.4 needs that the defaults do not give:

- The player runs locally: its harness is ``null`` (a plain chat loop) in a ``subprocess``
  runtime, so no remote sandbox, tunnel or sandbox API key is used; ToolGym's own sandboxes run
  the tools.
- A taskset id is imported as a top-level module name, so this module is also made importable
  as ``toolgym_verifiers`` (``TASKSET_ID``) in the process that loads the env.

Infrastructure faults: verifiers 0.4 has no ``InfraError`` (gone since 0.3.x); a rollout that
failed for the infrastructure records a typed ``verifiers.v1.SandboxError`` onto its trace
(``trace.errors``, ``stop_condition == "sandbox_error"``, ``ok`` False), which is what prime-rl
masks. ToolGym's ``infra_error`` status and a sandbox or server error left after the client's
retries raise exactly that, so no infrastructure fault is ever scored, 0 or otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import verifiers.v1 as vf

from toolgym.client import AsyncEnvClient, EnvClient, RetryPolicy
from toolgym.errors import ToolGymError
from toolgym.integrations._shared import tool_responses, with_tools_system_prompt

__all__ = ["TASKSET_ID", "ToolGymEnv", "ToolGymEnvConfig", "ToolGymTaskset", "ToolGymTasksetConfig",
           "load_environment"]

TASKSET_ID = "toolgym_verifiers"
"""The top-level module name verifiers imports this taskset by."""


class ToolGymTasksetConfig(vf.TasksetConfig):  # type: ignore[misc]
    """Which ToolGym tasks to play; the API key is never part of it (configs end up in traces)."""

    env_id: str = "toolgym/ToolUse-v0"
    task_ids: list[str] | None = None
    """These tasks, else every task of ``split`` on the server (up to ``limit``)."""
    split: str | None = None
    limit: int = 1000
    base_url: str | None = None
    """The ToolGym server, else ``$TOOLGYM_BASE_URL``."""
    max_retries: int = 5
    """The client's retries of 503s (a sandbox error among them) before a rollout is failed."""


class ToolGymTask(vf.Task[vf.TaskData]):  # type: ignore[misc]
    """One ToolGym task; ``data.id`` is its task id. No prompt: the env opens the conversation."""


class ToolGymTaskset(vf.Taskset[ToolGymTask, ToolGymTasksetConfig]):  # type: ignore[misc]
    """The ToolGym server's tasks of ``config.env_id``, listed when the taskset is iterated."""

    api_key: str | None = None

    def load(self) -> Iterator[ToolGymTask]:
        """One task per ToolGym task id (the server's listing, or ``config.task_ids``)."""
        ids = self.config.task_ids
        if ids is None:
            with EnvClient(self.config.base_url, self.api_key) as client:
                page = client.tasks(self.config.env_id, self.config.split, limit=self.config.limit)
            ids = [t["id"] for t in page["tasks"]]
        for task_id in ids:
            yield ToolGymTask(vf.TaskData(id=task_id, name=task_id, prompt=None), self.config.task)


class ToolGymEnvConfig(vf.EnvConfig):  # type: ignore[misc]
    """The env's one role, ``player``: the null chat harness in a local subprocess runtime."""

    player: vf.AgentConfig = vf.AgentConfig(harness={"id": "null"}, runtime=vf.SubprocessConfig())


class ToolGymEnv(vf.Env[ToolGymEnvConfig]):  # type: ignore[misc]
    """Plays one ToolGym episode per rollout, turn by turn, with the env as the model's user."""

    api_key: str | None = None

    async def run(self, task: ToolGymTask, agents: Any) -> None:
        """Reset, relay each reply to ToolGym and each observation back, record the summed reward.

        ``trace.info["toolgym"]`` keeps the episode id, the turns played and each step's reward.
        """
        config: ToolGymTasksetConfig = self.taskset.config
        async with AsyncEnvClient(config.base_url, self.api_key,
                                  retry=RetryPolicy(max_retries=config.max_retries)) as client:
            try:
                reset = await client.reset(config.env_id, task.data.id)
            except ToolGymError as exc:
                raise vf.SandboxError(f"ToolGym reset failed: {type(exc).__name__}: {exc}") from exc
            episode_id, rewards = reset.episode_id, list[float]()
            try:
                async with agents.player.interaction(task) as interaction:
                    observation = reset.observation
                    messages = with_tools_system_prompt(observation["messages"], observation.get("tools") or [])
                    segment = await interaction.turn(messages)
                    while not segment.terminated:
                        try:
                            step = await client.step(episode_id, segment.last_reply, expected_turn=len(rewards))
                        except ToolGymError as exc:
                            raise vf.SandboxError(f"ToolGym step {len(rewards)} of {episode_id} failed:"
                                                  f" {type(exc).__name__}: {exc}") from exc
                        if step.info.get("status") == "infra_error":
                            raise vf.SandboxError(f"ToolGym step {len(rewards)} of {episode_id}: infra_error")
                        rewards.append(step.reward)
                        interaction.trace.info["toolgym"] = {"episode_id": episode_id, "turns": len(rewards),
                                                             "rewards": rewards, "status": step.info.get("status"),
                                                             "reason": step.info.get("reason")}
                        if step.terminated or step.truncated:
                            break
                        segment = await interaction.turn(tool_responses(step.observation["messages"]))
                    # Only a rollout that got here is scored: one that raised carries its error, no reward.
                    interaction.trace.record_reward("toolgym_reward", sum(rewards))
            finally:
                try:
                    await client.close(episode_id)
                except ToolGymError:
                    pass  # the server reaps an idle episode anyway


def load_environment(env_id: str, *, base_url: str | None = None, api_key: str | None = None,
                     **kw: Any) -> ToolGymEnv:
    """A ``verifiers.v1`` env of ToolGym's ``env_id`` that runs locally (no remote sandbox service).

    Args:
        env_id: the ToolGym env (``toolgym/ToolUse-v0``...).
        base_url: the ToolGym server, else ``$TOOLGYM_BASE_URL``.
        api_key: its key, else ``$TOOLGYM_API_KEY``; kept on the env, out of every config.
        **kw: more ``ToolGymTasksetConfig`` fields (``task_ids``, ``split``, ``limit``, ``max_retries``);
            ``player`` replaces the player's ``AgentConfig`` (a model, sampling, ``max_turns``...),
            ``retries`` the env's whole-episode ``vf.RetryConfig``.
    """
    sys.modules.setdefault(TASKSET_ID, sys.modules[__name__])
    env_fields = {name: kw.pop(name) for name in ("player", "retries") if name in kw}
    taskset = ToolGymTasksetConfig(id=TASKSET_ID, env_id=env_id, base_url=base_url, **kw)
    config = ToolGymEnvConfig(taskset=taskset, **env_fields)
    env = ToolGymEnv(config)
    env.api_key = env.taskset.api_key = api_key
    return env
