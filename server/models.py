"""The HTTP wire models: pydantic lives here and nowhere deeper.

Requests are strict (``extra="forbid"``: an unknown field is a 422 naming it), split from
responses by direction, and every field is described, so ``openapi/openapi.json`` documents
the contract on its own.

Size: over 400 lines on purpose. The whole wire contract reads top to bottom in one file, and
most of its lines are field descriptions, which become the published OpenAPI document.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from toolgym.actions import action_from_wire
from toolgym.errors import ValidationFailed

__all__ = [
    "AssistantMessageIn",
    "BatchItemResult",
    "BatchResetRequest",
    "BatchResponse",
    "BatchStepItem",
    "BatchStepRequest",
    "EnvSpec",
    "EnvList",
    "EpisodeList",
    "EpisodeState",
    "EpisodeSummary",
    "ErrorResponse",
    "ExpandRejection",
    "ExpandRequest",
    "ExpandResponse",
    "ForkRequest",
    "JudgeRequest",
    "JudgeResponse",
    "JudgeVote",
    "ObservationOut",
    "RegisterTasksRequest",
    "RegisterTasksResponse",
    "ResetRequest",
    "ResetResponse",
    "SampleIn",
    "RetireRequest",
    "RetireResponse",
    "StepRequest",
    "StepResponse",
    "TaskInfo",
    "TaskPage",
    "TaskStat",
    "TaskStatsResponse",
    "UnretireRequest",
    "UnretireResponse",
    "VersionInfo",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests ---------------------------------------------------------------------------------
class FunctionIn(_In):
    name: str = Field(description="The tool's name.", max_length=256)
    arguments: str | dict[str, Any] = Field(
        default="{}", description="The arguments: a JSON object, or a string holding one (OpenAI form)."
    )


class ToolCallIn(_In):
    id: str | None = Field(default=None, description="The call's id (ignored; ToolGym numbers calls itself).")
    index: int | None = Field(
        default=None, description="Position among the calls, as some model servers send it (ignored)."
    )
    type: Literal["function"] = Field(default="function", description="Always 'function'.")
    function: FunctionIn = Field(description="Which tool, with which arguments.")


class AssistantMessageIn(_In):
    """An OpenAI-style assistant message as a step's action: its text and/or its tool calls.

    Only `content` and `tool_calls` are read; the other fields are accepted so that a model server's
    message can be passed on as it is. At least one of `content` and `tool_calls` must be present.
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [{"required": ["content"]}, {"required": ["tool_calls"]}]}
    )

    role: Literal["assistant"] | None = Field(default=None, description="Optional; must be 'assistant'.")
    content: str | None = Field(default=None, description="The message text.")
    tool_calls: list[ToolCallIn] = Field(default_factory=list, description="OpenAI-style tool calls.")
    reasoning_content: str | None = Field(default=None, description="Reasoning text; not parsed.")
    refusal: str | None = Field(default=None, description="Ignored.")


def _action_shape(value: Any, info: ValidationInfo) -> Any:
    """Refuse a bad action shape with the wire converter's own message.

    It runs before pydantic tries the ``str | AssistantMessageIn`` arms, whose errors would only
    say that neither arm fits.
    """
    try:
        action_from_wire(value, info.field_name or "action")
    except ValidationFailed as exc:
        raise PydanticCustomError("invalid_action", exc.message) from None
    return value


class ResetRequest(_In):
    """Starts an episode: the env, and the task (given, or drawn by seed, split and sampler)."""
    env_id: str = Field(description="An env id, e.g. 'toolgym/ToolUse-v0'.", examples=["toolgym/ToolUse-v0"])
    task_id: str | None = Field(default=None, description="Reset this task; without it a task is drawn.")
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1,
        description="Seeds the task draw and the env: the same seed gives the same episode.",
    )
    options: dict[str, Any] | None = Field(
        default=None,
        description="Per-env reset options (see GET /v1/envs), plus 'split' and 'sampler' for the task draw.",
    )


MAX_SAMPLE_TOKENS = 131072
"""Token ids one step may carry: a long reasoning turn fits, and a body stays far under the byte limit."""


class SampleIn(_In):
    """The tokens the policy sampled for this turn and, optionally, their log-probabilities.

    Stored with the step and returned in the trajectory and in `toolgym export`, so a trainer trains on
    exactly the tokens it sampled. The server does not read them.
    """
    token_ids: list[Annotated[int, Field(ge=0)]] = Field(
        description="The sampled token ids of this turn, in order.", max_length=MAX_SAMPLE_TOKENS
    )
    logprobs: list[float] | None = Field(
        default=None, max_length=MAX_SAMPLE_TOKENS,
        description="The sampling log-probability of each token id: same length, finite numbers.",
    )

    @field_validator("logprobs")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(math.isfinite(x) for x in value):
            raise ValueError("logprobs must be finite numbers (no NaN or infinity)")
        return value

    @model_validator(mode="after")
    def _same_length(self) -> SampleIn:
        if self.logprobs is not None and len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {len(self.token_ids)} token ids;"
                             " they must pair up one to one")
        return self


class StepRequest(_In):
    """One action for an episode, with optional guards against playing a retried step twice."""
    action: str | AssistantMessageIn = Field(
        description="The raw assistant turn (parsed by the env), or an OpenAI-style assistant message"
        " with content and/or tool_calls; any other shape is a 422."
    )
    expected_turn: int | None = Field(
        default=None, ge=0,
        description="The turn this action is for; an already played turn returns its stored result.",
    )
    mean_logprob: float | None = Field(
        default=None, description="The policy's mean token log-probability for this turn (task statistics);"
        " without it, the mean of `sample.logprobs` when given."
    )
    sample: SampleIn | None = Field(
        default=None, description="The policy's token ids (and log-probabilities) for this turn, stored with the"
        " step and returned in the trajectory."
    )

    _action = field_validator("action", mode="before")(_action_shape)

    @field_validator("mean_logprob")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("mean_logprob must be a finite number")
        return value


MAX_BATCH = 1024


class BatchResetRequest(_In):
    """Several resets in one request; they run concurrently and are answered one result each."""
    resets: list[ResetRequest] = Field(
        description="Resets to run together; each gets its own result, in order.", min_length=1, max_length=MAX_BATCH
    )


class BatchStepItem(StepRequest):
    """One step of a batch: a step request plus the episode it is for and its own idempotency key."""
    episode_id: str = Field(description="The episode this action is for; at most once per batch.")
    idempotency_key: str | None = Field(
        default=None, max_length=200, description="As the Idempotency-Key header of a single step."
    )


class BatchStepRequest(_In):
    """Steps on several distinct episodes in one request; they run concurrently."""
    steps: list[BatchStepItem] = Field(
        description="Steps to run together (different episodes); each gets its own result, in order.",
        min_length=1, max_length=MAX_BATCH,
    )


class RegisterTasksRequest(_In):
    """New tasks for an env, in its record format (see `record_format` in GET /v1/envs)."""
    tasks: list[dict[str, Any]] = Field(
        description="Task records in the env's record format (see GET /v1/envs); each may carry 'id' and 'split'.",
        max_length=100_000,
    )


class ForkRequest(_In):
    """Where to fork an episode; the body may be omitted to fork at its current turn."""
    turn: int | None = Field(default=None, ge=0, description="Fork at this turn (default: the current turn).")


# --- responses --------------------------------------------------------------------------------
class ObservationOut(_Out):
    """What the policy sees after a reset or a step: new chat messages, and the tool schemas when shown.

    Envs may add their own keys; `tools` is left out when the env shows none.
    """
    model_config = ConfigDict(extra="allow")
    messages: list[dict[str, Any]] = Field(description="New chat messages for the policy.")
    tools: list[dict[str, Any]] | None = Field(default=None, description="OpenAI tool schemas, when shown.")

    @model_serializer(mode="wrap")
    def _omit_absent_tools(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("tools") is None:
            data.pop("tools", None)
        return data


class ResetResponse(_Out):
    """A new episode (from a reset or a fork): its id and first observation."""
    episode_id: str = Field(description="Names the episode (and the replica that holds it).")
    observation: ObservationOut
    info: dict[str, Any] = Field(description="status, retryable, reward_components, metrics, ...")


class StepResponse(_Out):
    """The outcome of one step, Gymnasium-style: observation, reward, terminated, truncated, info."""
    observation: ObservationOut
    reward: float = Field(description="The verifiable reward for this step.")
    terminated: bool = Field(description="The episode reached a terminal state (e.g. the final answer).")
    truncated: bool = Field(description="The episode was cut off (e.g. the turn limit).")
    info: dict[str, Any] = Field(
        description="status (ok/invalid_action/timeout/infra_error), retryable, reason once stopped,"
        " reward_components, metrics, output_truncated, and env-specific keys."
    )


class EpisodeState(_Out):
    """An episode as it stands, with its whole trajectory so far; ended episodes stay readable."""
    episode_id: str
    env_id: str
    task_id: str
    split: str
    seed: int | None
    options: dict[str, Any]
    turn: int = Field(description="Steps taken so far.")
    status: str = Field(description="live, finished or interrupted.")
    reason: str | None
    total_reward: float
    reset: dict[str, Any] = Field(description="The reset's observation and info.")
    steps: list[dict[str, Any]] = Field(
        description="The trajectory so far: per turn its action and result, and `sample` (token_ids, logprobs)"
        " when the step carried one."
    )


class EpisodeSummary(_Out):
    """One row of the episode list: an episode's task, progress and return, without its trajectory."""
    episode_id: str
    env_id: str
    task_id: str
    split: str
    turn: int
    status: str
    reason: str | None
    total_reward: float


class EpisodeList(_Out):
    """A page of the caller's episodes, oldest first; `total` counts all that match."""
    episodes: list[EpisodeSummary]
    total: int
    offset: int
    limit: int


class EnvSpec(_Out):
    """What an env offers: its action, observation and reward formats, reset options and task counts."""
    id: str
    description: str
    action_format: str
    observation_format: str
    reward_spec: str
    record_format: str
    options: dict[str, Any] = Field(description="Reset options: type, default, doc.")
    tasks: dict[str, int] = Field(description="Registered tasks per split.")


class EnvList(_Out):
    """Every env this server offers."""
    envs: list[EnvSpec]


class TaskInfo(_Out):
    """A registered task as clients may see it: id, split and public metadata, never its gold answer."""
    id: str
    split: str
    metadata: dict[str, Any] = Field(description="Public facts about the task (never its gold).")


class TaskPage(_Out):
    """A page of an env's tasks; `total` counts all that match."""
    tasks: list[TaskInfo]
    total: int
    offset: int
    limit: int


class RegisterTasksResponse(_Out):
    """The ids given to the tasks just registered (a record without an `id` gets one)."""
    ids: list[str]


class TaskStat(_Out):
    """How the policy fares on one task so far, from the episodes stored on the server."""
    task_id: str
    split: str
    episodes: int
    finished: int
    mean_return: float
    success_rate: float
    mean_logprob: float | None
    status: str = Field(description="mastered, fragile, failing or unseen (LoopTool's greedy capability probing).")


class TaskStatsResponse(_Out):
    """Per-task statistics of one env, used to pick tasks to expand or retire."""
    env_id: str
    tasks: list[TaskStat]


class VersionInfo(_Out):
    """The server's version, its API version, the env ids it offers and the replica that answered."""
    version: str
    api_version: str
    envs: list[str]
    isolation: Literal["container", "namespace", "process"] | None = None
    """The sandbox isolation tier (docs/isolation.md); None on a server without a sandbox backend."""
    replica: str = Field(description="The answering server's replica token: the `<replica>` of the episode ids it"
                                     " makes (`ep-<replica>-<random>`), drawn at each start. A fleet entry point"
                                     " answers its own token and lists its replicas (docs/deploy.md, Fleet on Ray).")


class ErrorDetail(_Out):
    """A machine-readable error: a stable `code`, a message for humans, and whether retrying may help."""
    code: str
    message: str
    retryable: bool
    details: dict[str, Any] | None = None


class ErrorResponse(_Out):
    """The body of every error response: `{"error": {...}}`."""
    error: ErrorDetail


class BatchItemResult(_Out):
    """The outcome of one batch item: its result, or its error, with the status it would have had alone."""
    ok: bool = Field(description="Whether this item succeeded; if not, 'error' says why (its HTTP-style code).")
    status: int = Field(description="The HTTP status this item alone would have had.")
    result: dict[str, Any] | None = Field(default=None, description="The reset's or step's response, when ok.")
    error: ErrorDetail | None = None


class BatchResponse(_Out):
    """The answers to a batch request, one per item, in order."""
    results: list[BatchItemResult] = Field(description="One per request item, in the same order.")


# --- the data loop (routes/dataloop.py) ------------------------------------------------------
TaskClass = Literal["mastered", "fragile", "failing", "unseen"]
SplitName = Literal["train", "validation", "test"]
_MAX_IDS = 100_000


def _failing() -> list[TaskClass]:
    return ["failing"]


def _train() -> list[SplitName]:
    return ["train"]


class ExpandRequest(_In):
    """Asks the env for verified variants of tasks: named ones, or those of some splits in some classes."""
    task_ids: list[str] | None = Field(
        default=None, max_length=_MAX_IDS,
        description="Expand these tasks (any split). Without them: every task of `splits` classed in `status`.",
    )
    n: int = Field(default=3, ge=1, le=50, description="Variants asked of each task (LoopTool: 3).")
    status: list[TaskClass] = Field(
        default_factory=_failing, min_length=1,
        description="Task classes (GET .../tasks/stats) to expand when no task_ids are given.",
    )
    splits: list[SplitName] = Field(
        default_factory=_train, min_length=1,
        description="Splits the status selection reads (default train, so evaluation sets stay fixed).",
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1,
        description="Seeds the variants: the same seed and tasks give the same variants. Default: a random one.",
    )


class ExpandRejection(_Out):
    """A proposed variant that was not kept, and why."""
    parent_id: str = Field(description="The task the rejected variant was grown from.")
    reason: str = Field(description="Why it was not kept (invalid record, gold not scoring 1, duplicate).")


class ExpandResponse(_Out):
    """What an expansion produced: new task ids, rejected and skipped ones, and the seed to reproduce it."""
    created: list[str] = Field(description="Ids of the new tasks, registered in their parent's split.")
    rejected: int = Field(description="Proposed variants that failed verification or already existed.")
    skipped: list[str] = Field(description="Selected tasks for which the env proposed no variant.")
    seed: int = Field(description="The seed used (pass it again to reproduce this expansion).")
    rejections: list[ExpandRejection] = Field(description="One entry per rejected variant.")


class RetireRequest(_In):
    """Takes tasks out of the draw: named ones, or every task of some splits in one class (exactly one)."""
    task_ids: list[str] | None = Field(default=None, max_length=_MAX_IDS, description="Retire these tasks.")
    status: TaskClass | None = Field(
        default=None, description="Or retire every task of `splits` in this class (usually 'mastered')."
    )
    splits: list[SplitName] = Field(
        default_factory=_train, min_length=1, description="Splits a status selection reads."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> RetireRequest:
        if (self.task_ids is None) == (self.status is None):
            raise ValueError("give exactly one of task_ids and status")
        return self


class RetireResponse(_Out):
    """Which tasks this request retired, and which were retired already."""
    retired: list[str] = Field(description="Tasks retired by this request.")
    already_retired: list[str] = Field(description="Selected tasks that were retired before.")


class UnretireRequest(_In):
    """Puts retired tasks back in the draw."""
    task_ids: list[str] = Field(max_length=_MAX_IDS, description="Put these tasks back in the draw.")


class UnretireResponse(_Out):
    """Which tasks are back in the draw, and which were not retired."""
    unretired: list[str] = Field(description="Tasks back in the draw.")
    not_retired: list[str] = Field(description="Selected tasks that were not retired.")


class JudgeRequest(_In):
    """A policy's answer to a task, to be compared with the task's label by the judge."""
    response: str | AssistantMessageIn = Field(
        description="The policy's answer to the task: the raw assistant turn, or an OpenAI-style message."
    )

    _response = field_validator("response", mode="before")(_action_shape)


class JudgeVote(_Out):
    """One judge call's verdict, or why it gave none."""
    verdict: str | None = Field(description="This vote's verdict, or null when it gave none.")
    error: str | None = Field(
        default=None, description="Why it gave none: timeout, unreachable, http_<status>, bad_response, unparsable."
    )
    model: str | None = Field(default=None, description="The judge model asked.")
    reply: str = Field(default="", description="The start of the judge's reply (its short analysis).")


class JudgeResponse(_Out):
    """The judge's consensus on a policy's answer versus the task's label, and what to do with the task."""
    verdict: Literal[
        "RESPONSE1_INCORRECT", "RESPONSE2_INCORRECT", "BOTH_CORRECT", "BOTH_INCORRECT", "no_consensus"
    ] = Field(description="Response 1 is the task's label, Response 2 the policy's answer (LoopTool's order).")
    votes: list[JudgeVote] = Field(description="Every vote, failed ones included; empty when the verifier decided.")
    action: Literal["keep", "relabel_suggested", "drop_suggested"] = Field(
        description="What to do with the task: RESPONSE1_INCORRECT -> relabel_suggested, BOTH_INCORRECT ->"
        " drop_suggested, otherwise keep. ToolGym changes nothing itself."
    )
    judged_by: Literal["judge", "verifier"] = Field(
        description="'verifier' when the answer already earns full reward (no judge asked: BOTH_CORRECT)."
    )
