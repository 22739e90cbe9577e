"""Episodes: reset, step, state, trajectory, fork, close.

The routes speak pydantic (``toolgym.server.models``); the manager answers dataclasses
(``toolgym.server.episode_types``); the converters below are the only place they meet.

The hot routes (reset, step, state) answer a ``Response`` holding their model's JSON
(``json_response``): the model is validated once, when it is built from the manager's
dataclass, and serialized once. Returning the model itself would have FastAPI validate it a
second time against ``response_model`` before serializing it; ``response_model`` stays on
the decorator only for the OpenAPI document. The three requests of every episode (reset,
step, close) also read the manager and settings from ``request.app.state`` rather than
through ``ManagerDep``/``SettingsDep``: each dependency FastAPI solves costs a few tens of
microseconds per request, and these are the routes a trainer calls thousands of times a second.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from toolgym.server.deps import ManagerDep, OwnerDep
from toolgym.server.episode_types import EpisodeSnapshot, ResetResult, Sample, StepResult
from toolgym.server.episodes import EpisodeManager
from toolgym.server.models import (
    EpisodeList,
    EpisodeState,
    EpisodeSummary,
    ForkRequest,
    ObservationOut,
    ResetRequest,
    ResetResponse,
    StepRequest,
    StepResponse,
)
from toolgym.server.routes._actions import action_from_request
from toolgym.server.settings import Settings

router = APIRouter(prefix="/v1/episodes", tags=["episodes"])


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as FastAPI would answer it for a ``response_model`` route, without validating it again.

    The bytes are pydantic's JSON of the model, as FastAPI's own serialization writes them
    (compact, UTF-8, non-finite floats as null), so clients see the same body.
    """
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def reset_response(result: ResetResult) -> ResetResponse:
    """The wire form of a reset (or a fork)."""
    return ResetResponse(episode_id=result.episode_id, observation=ObservationOut.model_validate(result.observation),
                         info=result.info)


def step_response(result: StepResult) -> StepResponse:
    """The wire form of a step."""
    return StepResponse(
        observation=ObservationOut.model_validate(result.observation), reward=result.reward,
        terminated=result.terminated, truncated=result.truncated, info=result.info,
    )


def state_response(snapshot: EpisodeSnapshot) -> EpisodeState:
    """The wire form of an episode's state, trajectory included."""
    return EpisodeState(
        episode_id=snapshot.episode_id, env_id=snapshot.env_id, task_id=snapshot.task_id, split=snapshot.split,
        seed=snapshot.seed, options=snapshot.options, turn=snapshot.turn, status=snapshot.status,
        reason=snapshot.reason, total_reward=snapshot.total_reward, reset=snapshot.reset,
        steps=[s.to_wire() for s in snapshot.steps],
    )


async def run_reset(
    manager: EpisodeManager, owner: str, body: ResetRequest, idempotency_key: str | None = None
) -> ResetResponse:
    """One reset (the single route and the batch route)."""
    result = await manager.reset_once(owner, idempotency_key, body.env_id, body.task_id, body.seed, body.options)
    return reset_response(result)


async def run_step(
    manager: EpisodeManager, owner: str, settings: Settings, episode_id: str, body: StepRequest,
    idempotency_key: str | None,
) -> StepResponse:
    """One step (the single route and the batch route)."""
    result = await manager.step(
        owner, episode_id, action_from_request(body.action, settings), expected_turn=body.expected_turn,
        idempotency_key=idempotency_key, mean_logprob=body.mean_logprob,
        sample=None if body.sample is None else Sample(
            token_ids=tuple(body.sample.token_ids),
            logprobs=None if body.sample.logprobs is None else tuple(body.sample.logprobs)),
    )
    return step_response(result)


@router.post("", response_model=ResetResponse, status_code=201, summary="Reset: a new episode and its sandbox")
async def reset(
    body: ResetRequest, request: Request, owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Start an episode: draw a task (or take `task_id`), give it a sandbox, and answer its first observation.

    With an `Idempotency-Key` header, a retried reset returns the first attempt's episode instead of
    starting a second one. Errors: 404 unknown env or task; 422 bad options or a task outside the
    requested split; 429 this API key's open-episode quota is reached; 503 the server is at
    capacity, shutting down, or could not start a sandbox (retry after `Retry-After`).
    """
    return json_response(await run_reset(request.app.state.manager, owner, body, idempotency_key), 201)


@router.get("", response_model=EpisodeList, summary="The caller's episodes")
async def list_episodes(
    manager: ManagerDep, owner: OwnerDep,
    status: Annotated[str | None, Query(description="live, finished or interrupted")] = None,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite's OFFSET is a signed 64-bit int
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EpisodeList:
    """List the caller's episodes, oldest first, optionally only those with one status.

    Only episodes started with the caller's API key are listed; `total` counts them all, so pages can
    be walked with `offset` and `limit`.
    """
    page = await manager.list_episodes(owner, status, offset, limit)
    episodes = [
        EpisodeSummary(episode_id=e.episode_id, env_id=e.env_id, task_id=e.task_id, split=e.split, turn=e.turn,
                       status=e.status, reason=e.reason, total_reward=e.total_reward)
        for e in page.episodes
    ]
    return EpisodeList(episodes=episodes, total=page.total, offset=offset, limit=limit)


@router.post("/{episode_id}/step", response_model=StepResponse, summary="Step: one action -> observation, reward")
async def step(
    episode_id: str, body: StepRequest, request: Request, owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Play one action on an episode and answer the observation, the reward and whether it ended.

    The step is stored before it is answered. A retry is never played twice: the same
    `Idempotency-Key`, or an `expected_turn` already played, returns the recorded result. A bad
    action is not an error: it is a step with `info.status` `invalid_action`. Errors: 404 unknown
    episode; 409 the episode has ended, or `expected_turn` is ahead of the episode; 422 a malformed
    action; 503 the sandbox failed twice in this step (it has been replaced: retry the step).
    """
    state = request.app.state
    return json_response(await run_step(state.manager, owner, state.settings, episode_id, body, idempotency_key))


@router.get("/{episode_id}", response_model=EpisodeState, summary="State: turn, trajectory so far")
async def get_episode(episode_id: str, manager: ManagerDep, owner: OwnerDep) -> Response:
    """Answer an episode's state: its task, options, turn, status, total reward and trajectory so far.

    Ended episodes stay readable (from the store). Errors: 404 unknown episode, or one of another key.
    """
    return json_response(state_response(await manager.state(owner, episode_id)))


@router.get("/{episode_id}/trajectory", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
            summary="The trajectory as JSONL: the reset, then one line per step")
async def trajectory(episode_id: str, manager: ManagerDep, owner: OwnerDep) -> PlainTextResponse:
    """Download an episode's trajectory as JSONL: a first line with the reset, then one line per step.

    The first line has `turn` null, the episode's task, seed and options, and the reset's
    observation and info; each further line is one turn's action and result. Errors: 404 unknown episode.
    """
    state = await manager.state(owner, episode_id)
    head = {"episode_id": state.episode_id, "env_id": state.env_id, "task_id": state.task_id, "split": state.split,
            "seed": state.seed, "options": state.options}
    lines = [json.dumps({"turn": None, **head, **state.reset}, ensure_ascii=False)]
    lines += [json.dumps(s.to_wire(), ensure_ascii=False) for s in state.steps]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="application/x-ndjson")


@router.post("/{episode_id}/fork", response_model=ResetResponse, status_code=201,
             summary="Fork: a new episode at the same point, by deterministic replay")
async def fork(episode_id: str, manager: ManagerDep, owner: OwnerDep, body: ForkRequest | None = None) -> ResetResponse:
    """Start a new episode at a turn of this one by replaying its recorded actions in a fresh sandbox.

    Answers like a reset, with the observation and info of that turn; the new episode is then
    stepped on its own. The replay is deterministic for deterministic envs; a divergence is logged,
    not refused. Errors: 404 unknown episode; 422 `turn` past the episode's current turn; as a
    reset for capacity, quota and sandbox failures (the half-built fork is closed).
    """
    return reset_response(await manager.fork(owner, episode_id, body.turn if body else None))


@router.delete("/{episode_id}", status_code=204, summary="Close: the sandbox is destroyed")
async def close(episode_id: str, request: Request, owner: OwnerDep) -> Response:
    """Close an episode: it ends with reason `closed` and its sandbox is removed in the background.

    Closing an episode that has already ended succeeds too (204), so a retried DELETE is harmless.
    Errors: 404 unknown episode.
    """
    await request.app.state.manager.close(owner, episode_id)
    return Response(status_code=204)
