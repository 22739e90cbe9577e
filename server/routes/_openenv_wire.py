"""OpenEnv's wire shapes and their conversion from ToolGym's: the action, the result, the state.

The routes of ``toolgym.server.routes.openenv`` (HTTP and WebSocket) answer with these, so both
transports speak the same JSON. OpenEnv's own types are in
https://github.com/huggingface/OpenEnv (``openenv.core.env_server.types``): its results are
``{"observation", "reward", "done", "metadata"}`` and its state has ``episode_id`` and
``step_count``; the fields ToolGym adds are documented on each model.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolgym.errors import ValidationFailed
from toolgym.server.episodes import EpisodeManager
from toolgym.server.errors import validation_error
from toolgym.server.models import ResetRequest, ResetResponse, StepRequest, StepResponse, ToolCallIn
from toolgym.server.routes.episodes import run_reset

__all__ = [
    "OpenEnvAction", "OpenEnvMetadata", "OpenEnvObservation", "OpenEnvResetRequest", "OpenEnvResult", "OpenEnvSchema",
    "OpenEnvState", "OpenEnvStepRequest", "checked", "episode_state", "reset_episode", "reset_result", "resolve_env_id",
    "step_result",
]

M = TypeVar("M", bound=BaseModel)

_Forbid = ConfigDict(extra="forbid")


class OpenEnvAction(BaseModel):
    """A ToolGym action in OpenEnv's ``action`` JSON: a raw assistant turn, or an assistant message."""

    model_config = _Forbid
    message: str | None = Field(default=None, description="The raw assistant turn (e.g. with <tool_call> tags).")
    role: Literal["assistant"] | None = Field(default=None, description="Optional; must be 'assistant'.")
    content: str | None = Field(default=None, description="The assistant message's text.")
    tool_calls: list[ToolCallIn] | None = Field(default=None, description="OpenAI-style tool calls.")
    reasoning_content: str | None = Field(default=None, description="Reasoning text; not parsed.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="OpenEnv's action metadata (ignored).")

    def step_request(self) -> StepRequest:
        """The ToolGym step this action asks for; ``ValidationFailed`` unless it is exactly one of the two forms."""
        message_fields = {"role", "content", "tool_calls", "reasoning_content"} & self.model_fields_set
        if self.message is not None:
            if message_fields:
                raise ValidationFailed("action: give `message` or an assistant message, not both"
                                       f" (also {sorted(message_fields)})")
            return checked(StepRequest, {"action": self.message})
        if "content" not in self.model_fields_set and not self.tool_calls:
            raise ValidationFailed("action: needs `message` (the raw turn) or `content`/`tool_calls`")
        message = self.model_dump(include=message_fields, exclude_none=True)
        message.setdefault("content", None)
        return checked(StepRequest, {"action": message})


class OpenEnvResetRequest(BaseModel):
    """OpenEnv's reset parameters, as ToolGym's reset takes them (the env comes from the path)."""

    model_config = _Forbid
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1,
                             description="Seeds the task draw and the env: the same seed gives the same episode.")
    task_id: str | None = Field(default=None, description="Reset this task; without it a task is drawn.")
    options: dict[str, Any] | None = Field(default=None, description="Reset options (GET /v1/envs lists them).")


class OpenEnvStepRequest(BaseModel):
    """An HTTP step: OpenEnv's ``{"action": ...}`` and the episode it is for (HTTP has no session)."""

    model_config = _Forbid
    action: OpenEnvAction
    episode_id: str = Field(max_length=200, description="The episode (the reset's metadata.episode_id).")


class OpenEnvObservation(BaseModel):
    """The ``observation`` object: ToolGym's observation plus the step's ``metadata``."""

    model_config = ConfigDict(extra="allow")
    messages: list[dict[str, Any]] = Field(description="New chat messages for the policy.")
    tools: list[dict[str, Any]] | None = Field(default=None, description="OpenAI tool schemas, when shown.")
    metadata: dict[str, Any] = Field(description="As the result's metadata.")


class OpenEnvResult(BaseModel):
    """What a reset or a step answers, in OpenEnv's shape."""

    observation: dict[str, Any] = Field(description="An OpenEnvObservation.")
    reward: float | None = Field(description="The step's reward; null after a reset.")
    done: bool = Field(description="terminated or truncated.")
    metadata: dict[str, Any] = Field(description="The info, with episode_id, terminated and truncated.")


class OpenEnvState(BaseModel):
    """OpenEnv's ``State`` (``episode_id``, ``step_count``) with ToolGym's episode facts."""

    episode_id: str | None = Field(description="The episode; null on a socket before its first reset.")
    step_count: int = Field(description="Steps taken so far.")
    env_id: str | None = None
    task_id: str | None = None
    split: str | None = None
    seed: int | None = None
    options: dict[str, Any] | None = None
    status: str | None = Field(default=None, description="live, finished or interrupted.")
    reason: str | None = None
    total_reward: float | None = None


class OpenEnvSchema(BaseModel):
    """OpenEnv's ``/schema``: JSON schemas of the action, the observation and the state."""

    action: dict[str, Any]
    observation: dict[str, Any]
    state: dict[str, Any]


class OpenEnvMetadata(BaseModel):
    """OpenEnv's ``/metadata``: what the env is."""

    name: str
    description: str
    version: str
    documentation_url: str | None = None


def checked(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as one of ToolGym's request models; a miss is the 422 (``ValidationFailed``) a route would give."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from exc


def resolve_env_id(manager: EpisodeManager, env_name: str) -> str:
    """The env id ``env_name`` names: a full id (``toolgym/ToolUse-v0``) or its name (``ToolUse-v0``).

    A bare name is ``toolgym``'s first, else the one namespace's that serves it; ``EnvNotFound``
    (404, with the closest id) otherwise.
    """
    if "/" not in env_name:
        if f"toolgym/{env_name}" in manager.families:
            return f"toolgym/{env_name}"
        matches = [e for e in manager.families if e.partition("/")[2] == env_name]
        if len(matches) == 1:
            return matches[0]
    return manager.tasks.family(env_name).env_id


def reset_result(reset: ResetResponse) -> OpenEnvResult:
    """A ToolGym reset in OpenEnv's shape."""
    metadata = {**reset.info, "episode_id": reset.episode_id, "terminated": False, "truncated": False}
    return OpenEnvResult(observation=_observation(reset.observation.model_dump(mode="json"), metadata),
                         reward=None, done=False, metadata=metadata)


def step_result(episode_id: str, step: StepResponse) -> OpenEnvResult:
    """A ToolGym step in OpenEnv's shape."""
    metadata = {**step.info, "episode_id": episode_id, "terminated": step.terminated, "truncated": step.truncated}
    return OpenEnvResult(observation=_observation(step.observation.model_dump(mode="json"), metadata),
                         reward=step.reward, done=step.terminated or step.truncated, metadata=metadata)


def _observation(observation: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    # OpenEnv's own servers nest the metadata in the observation too; typed clients read it there.
    return {**observation, "metadata": metadata}


async def episode_state(manager: EpisodeManager, owner: str, episode_id: str | None) -> OpenEnvState:
    """The episode's state in OpenEnv's shape (an empty one before a socket's first reset)."""
    if episode_id is None:
        return OpenEnvState(episode_id=None, step_count=0)
    s = await manager.state(owner, episode_id)
    return OpenEnvState(episode_id=s.episode_id, step_count=s.turn, env_id=s.env_id, task_id=s.task_id, split=s.split,
                        seed=s.seed, options=s.options, status=s.status, reason=s.reason, total_reward=s.total_reward)


async def reset_episode(manager: EpisodeManager, owner: str, env_id: str, body: OpenEnvResetRequest,
                 idempotency_key: str | None) -> ResetResponse:
    request = checked(ResetRequest, {"env_id": env_id, **body.model_dump(exclude_none=True)})
    return await run_reset(manager, owner, request, idempotency_key)
