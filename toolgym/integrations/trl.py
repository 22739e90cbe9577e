"""ToolGym episodes as TRL environments: ``GRPOTrainer(environment_factory=..., reward_funcs=reward)``.

TRL (>= 1.16) makes one instance of the factory's class per rollout, reuses instances from a
pool, calls ``reset(**row)`` with the dataset row (its string is appended to the last user
message), offers every other public method as a tool (schema from type hints and the Google
docstring), and hands the instances to reward functions as ``environments=``.

TRL reads the tools once, off the class, when the trainer starts, while a ToolUse task brings its
own tools. So the class has one generic tool, ``call_tool(name, arguments)``: ``reset`` lists the
task's tools (their OpenAI schemas) in the prompt, and each call is one ToolGym step with that
tool call. ``reward`` then sends the completion's last assistant text as the final answer and
returns the episode's return (the sum of its step rewards), or ``None`` when an infrastructure
fault hit the episode: TRL treats a row whose every reward is ``None`` as unscorable (advantage 0,
left out of the group baseline and the logged means), never as a reward of 0.

A dataset row names its task with ``task_id`` (and may carry ``seed`` and ``options``); a row
without ``task_id`` gets a task drawn by the server. See docs/trainers/trl.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from toolgym.actions import message_from_wire
from toolgym.client import AsyncEnvClient, RetryPolicy
from toolgym.integrations._shared import EpisodeRun, make_client, run_sync, task_prompt, tool_output

__all__ = ["ToolGymEnvironment", "environment_factory", "reward"]

INFRA_MESSAGE = "error: ToolGym could not run this call (infrastructure failure); this rollout will not be scored"
OVER_MESSAGE = "error: the episode is over; give your final answer"


class ToolGymEnvironment:
    """One rollout's ToolGym episode; subclasses made by ``environment_factory`` fix the env and server.

    TRL turns every public method but ``reset`` into a tool, so this class has exactly one:
    ``call_tool``. ``episode`` is a property (TRL lists functions only) holding the rollout's
    ``EpisodeRun``.
    """

    env_id: str = ""
    reset_options: Mapping[str, Any] = {}
    _client: AsyncEnvClient | None = None

    def __init__(self) -> None:
        self._run: EpisodeRun | None = None

    @property
    def episode(self) -> EpisodeRun | None:
        """The current rollout's episode (``None`` before the first reset)."""
        return self._run

    def reset(self, task_id: str | None = None, seed: int | None = None,
              options: Mapping[str, Any] | None = None, **row: Any) -> str:
        """Start a new episode for the dataset row; returns the task text TRL appends to the user turn.

        The previous rollout's episode, if still open, is closed first (instances are reused).
        ``options`` from the row override the factory's ``reset_kwargs``.
        """
        if self._run is not None:
            run_sync(self._run.close())
        assert self._client is not None, "use environment_factory() to make the class"
        self._run = EpisodeRun(self._client, self.env_id, task_id)
        if not run_sync(self._run.reset(seed=seed, options={**self.reset_options, **(options or {})})):
            return INFRA_MESSAGE
        return task_prompt(self._run.observation)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Call one of the task's tools (listed in the task) and return its output.

        Args:
            name: The name of the task's tool to call.
            arguments: The tool's arguments, as a JSON object.

        Returns:
            The tool's output, or an error message.
        """
        run = self._run
        if run is None:
            return OVER_MESSAGE
        if isinstance(arguments, str):  # a model may send the object as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        call = {"id": f"call_{run.turn}_0", "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}
        result = run_sync(run.step(message_from_wire({"content": None, "tool_calls": [call]})))
        if result is None:
            return INFRA_MESSAGE if run.infra_error is not None else OVER_MESSAGE
        return tool_output(result.observation)


def environment_factory(env_id: str, *, base_url: str | None = None, api_key: str | None = None,
                        retry: RetryPolicy | None = None, **reset_kwargs: Any) -> type[ToolGymEnvironment]:
    """The class to pass as ``GRPOTrainer(environment_factory=...)`` for episodes of ``env_id``.

    ``reset_kwargs`` are the env's reset options (``max_turns=5``...), for every episode. Its
    instances share one ``AsyncEnvClient`` (one connection pool) on the adapters' background loop.

    Args:
        env_id: the ToolGym env, e.g. ``toolgym/ToolUse-v0``.
        base_url: the server; ``TOOLGYM_BASE_URL`` when absent.
        api_key: the server's key; ``TOOLGYM_API_KEY`` when absent.
        retry: the client's retry policy (how long a sandbox fault is retried before the row is masked).
        **reset_kwargs: reset options of the env, sent with every reset.
    """
    client = make_client(base_url, api_key, retry)
    return type("ToolGymEnv", (ToolGymEnvironment,),
                {"env_id": env_id, "reset_options": dict(reset_kwargs), "_client": client,
                 "__doc__": f"TRL environment for ToolGym's {env_id}."})


def _final_text(completion: Any) -> str:
    """The completion's last assistant text (conversational or plain), which is its final answer."""
    if isinstance(completion, str):
        return completion
    for message in reversed(completion or []):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return str(message.get("content") or "")
    return ""


def reward(completions: Sequence[Any], environments: Sequence[ToolGymEnvironment] | None = None,
           **kwargs: Any) -> list[float | None]:
    """A TRL reward function: each rollout's ToolGym return, ``None`` where infrastructure failed.

    The last assistant text of each completion is stepped as the episode's final answer (all
    rollouts at once) unless the episode already ended; the reward is then the episode's return.
    """
    if environments is None:
        raise ValueError("reward needs GRPOTrainer(environment_factory=environment_factory(...)) from this module")

    async def finish(env: ToolGymEnvironment, completion: Any) -> float | None:
        run = env.episode
        if run is None:
            return None
        await run.step(_final_text(completion))
        await run.close()
        return run.episode_return

    async def finish_all() -> list[float | None]:
        return list(await asyncio.gather(*(finish(e, c) for e, c in zip(environments, completions, strict=True))))

    return run_sync(finish_all())
