"""ToolGym episodes in verl (>= 0.9): ``ToolGymTool`` (a ``BaseTool``) and the ``toolgym_agent`` agent loop.

verl's ``ToolAgentLoop`` creates a tool instance before every call and releases it after, and
its tool list is fixed by the tool config while each ToolUse task has its own tools. So:

- ``ToolGymTool`` is one generic tool, ``call_tool(name, arguments)``. Its state, an
  ``EpisodeRun``, lives in a registry keyed by episode id, and the trajectory (verl's
  ``AgentData``) carries its episode id and run, so the calls of one sample share one episode
  whatever ``create``/``release`` do. ``execute`` returns the step's reward as verl's tool reward.
- The ``toolgym_agent`` loop (a ``ToolAgentLoop``) resets the sample's episode first, from the
  sample's ``tools_kwargs`` (``{"call_tool": {"create_kwargs": {"env_id", "task_id"}}}``), appends
  the task's messages and tool list to the last user message, runs verl's loop, steps the last
  assistant text as the final answer, and returns ``reward_score`` = the episode's return.

An infrastructure fault has no reward: the sample's ``response_mask`` is zeroed (no token of it
is trained on), ``reward_score`` is 0.0 only as a placeholder (verl needs a float on every
sample), and ``extra_fields["toolgym_masked"] = 1`` with ``toolgym_infra_error`` saying why.
Every sample carries the same ``toolgym_*`` keys, as verl requires. See docs/trainers/verl.md.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from toolgym.actions import message_from_wire
from toolgym.client import AsyncEnvClient, RetryPolicy
from toolgym.integrations._shared import (
    CALL_TOOL_SCHEMA,
    EpisodeRun,
    make_client,
    parse_tool_calls,
    task_prompt,
    tool_output,
)

__all__ = ["AGENT_NAME", "ToolGymAgentLoop", "ToolGymTool", "tool_config"]

AGENT_NAME = "toolgym_agent"
INFRA_MESSAGE = "error: ToolGym could not run this call (infrastructure failure); this sample will not be scored"
_RUNS: dict[str, EpisodeRun] = {}
"""The live episodes of this worker process, by episode id (tools are shared by every sample)."""


def tool_config(env_id: str, *, base_url: str | None = None, api_key: str | None = None,
                max_retries: int | None = None) -> dict[str, Any]:
    """The tool config verl reads (``actor_rollout_ref.rollout.multi_turn.tool_config_path``, as YAML).

    ``base_url``/``api_key`` left out are read from ``TOOLGYM_BASE_URL``/``TOOLGYM_API_KEY`` in
    the rollout workers, which keeps the key out of the file. ``max_retries`` is the client's
    (how often a sandbox fault is retried before the sample is masked; 5 by default).
    """
    config: dict[str, Any] = {"type": "native", "env_id": env_id}
    if base_url:
        config["base_url"] = base_url
    if api_key:
        config["api_key"] = api_key
    if max_retries is not None:
        config["max_retries"] = max_retries
    return {"tools": [{"class_name": f"{__name__}.ToolGymTool", "config": config, "tool_schema": CALL_TOOL_SCHEMA}]}


class ToolGymTool(BaseTool):  # type: ignore[misc]
    """verl's tool for ToolGym: each call is one step of the sample's episode (reset on its first call)."""

    def __init__(self, config: dict[str, Any], tool_schema: OpenAIFunctionToolSchema | None = None) -> None:
        super().__init__(config, tool_schema or OpenAIFunctionToolSchema.model_validate(CALL_TOOL_SCHEMA))
        self.env_id: str = config["env_id"]
        retries = config.get("max_retries")
        retry = RetryPolicy(max_retries=int(retries)) if retries is not None else None
        self.client: AsyncEnvClient = make_client(config.get("base_url"), config.get("api_key"), retry)
        self._created: dict[str, dict[str, Any]] = {}

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        """Remember the call's ``create_kwargs`` (``env_id``, ``task_id``); the episode starts at the first call."""
        instance_id = instance_id or uuid4().hex
        self._created[instance_id] = dict(kwargs.get("create_kwargs") or {})
        return instance_id, ToolResponse()

    async def start(self, create_kwargs: dict[str, Any]) -> EpisodeRun:
        """Reset a new episode for ``create_kwargs`` and register it (its ``infra_error`` set if that failed)."""
        run = EpisodeRun(self.client, str(create_kwargs.get("env_id") or self.env_id), create_kwargs.get("task_id"))
        await run.reset(seed=create_kwargs.get("seed"), options=create_kwargs.get("options"))
        if run.episode_id is not None:
            _RUNS[run.episode_id] = run
        return run

    async def execute(self, instance_id: str, parameters: dict[str, Any],
                      **kwargs: Any) -> tuple[ToolResponse, float, dict[str, Any]]:
        """Step the sample's episode with the call ``parameters`` names; the step's reward is the tool reward."""
        agent_data = kwargs.get("agent_data")
        run: EpisodeRun | None = getattr(agent_data, "toolgym_run", None)  # set by the toolgym_agent loop
        if run is None:  # verl's own tool_agent loop: the first call starts the episode, later ones find it by id
            run = _RUNS.get(str(getattr(agent_data, "toolgym_episode_id", None)))
            if run is None:
                run = await self.start(self._created.get(instance_id, {}))
                if agent_data is not None:
                    agent_data.toolgym_episode_id = run.episode_id
        arguments = parameters.get("arguments", {})
        call = {"id": f"call_{run.turn}_0", "type": "function",
                "function": {"name": str(parameters.get("name", "")),
                             "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}}
        result = await run.step(message_from_wire({"content": None, "tool_calls": [call]}))
        metrics = {"toolgym_infra_error": float(run.infra_error is not None)}
        if result is None:
            text = INFRA_MESSAGE if run.infra_error else "error: the episode is over; give your final answer"
            return ToolResponse(text=text), 0.0, metrics
        return ToolResponse(text=tool_output(result.observation)), float(result.reward), metrics

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        """Forget the call's instance; the episode lives on until the agent loop finishes it."""
        self._created.pop(instance_id, None)


@register(AGENT_NAME)
class ToolGymAgentLoop(ToolAgentLoop):  # type: ignore[misc]
    """verl's tool agent loop around one ToolGym episode, whose return becomes ``reward_score``."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """Reset the episode, run verl's loop, step the final answer; an infra fault masks the sample."""
        tool = next((t for t in self.tools.values() if isinstance(t, ToolGymTool)), None)
        if tool is None:
            raise ValueError(f"the {AGENT_NAME} loop needs a ToolGymTool in the tool config (see tool_config())")
        create_kwargs = (kwargs.get("tools_kwargs") or {}).get(tool.name, {}).get("create_kwargs", {})
        self._toolgym_run = run = await tool.start(dict(create_kwargs))
        self._toolgym_data: Any = None
        prompt = [dict(m) for m in kwargs.get("raw_prompt") or []]
        text = task_prompt(run.observation, tool.name)
        if prompt and prompt[-1].get("role") == "user":
            prompt[-1]["content"] = f"{prompt[-1].get('content') or ''}{text}"
        else:
            prompt.append({"role": "user", "content": text})
        try:
            output: AgentLoopOutput = await super().run(sampling_params, **{**kwargs, "raw_prompt": prompt})
            if run.infra_error is None and not run.done:
                await run.step(self._final_text())
        finally:
            await run.close()
            if run.episode_id is not None:
                _RUNS.pop(run.episode_id, None)
        masked = run.infra_error is not None
        output.reward_score = 0.0 if masked else run.episode_return
        if masked:
            output.response_mask = [0] * len(output.response_mask)
        output.extra_fields.update({
            "toolgym_episode_id": run.episode_id or "", "toolgym_return": run.episode_return,
            "toolgym_masked": int(masked), "toolgym_infra_error": run.infra_error or "",
        })
        return output

    async def _handle_pending_state(self, agent_data: Any, sampling_params: dict[str, Any]) -> Any:
        """Tie the trajectory to its episode before the first generation (``ToolGymTool`` reads it).

        The run itself rides along, so that a sample whose reset failed is answered as masked
        by every call rather than given a second episode.
        """
        agent_data.toolgym_run = self._toolgym_run
        agent_data.toolgym_episode_id = self._toolgym_run.episode_id
        self._toolgym_data = agent_data
        return await super()._handle_pending_state(agent_data, sampling_params)

    def _final_text(self) -> str:
        """The last assistant text: the last message if verl appended it, else the last generation decoded."""
        data = self._toolgym_data
        if data is None:
            return ""
        last = data.messages[-1] if data.messages else {}
        if last.get("role") == "assistant":
            return str(last.get("content") or "")
        decoded = self.tokenizer.decode(data.response_ids, skip_special_tokens=True)
        return parse_tool_calls(decoded).content or ""
