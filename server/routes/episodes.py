"""Episodes: reset, step, state, trajectory, fork, close."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import PlainTextResponse

from toolgym.server.deps import ManagerDep, OwnerDep, SettingsDep
from toolgym.server.episodes import EpisodeManager
from toolgym.server.models import (
    EpisodeList,
    EpisodeState,
    EpisodeSummary,
    ForkRequest,
    ResetRequest,
    ResetResponse,
    StepRequest,
    StepResponse,
)
from toolgym.server.routes._actions import action_from_request
from toolgym.server.settings import Settings

router = APIRouter(prefix="/v1/episodes", tags=["episodes"])


async def run_reset(
    manager: EpisodeManager, owner: str, body: ResetRequest, idempotency_key: str | None = None
) -> ResetResponse:
    """One reset (the single route and the batch route)."""
    live = await manager.reset_once(owner, idempotency_key, body.env_id, body.task_id, body.seed, body.options)
    return ResetResponse(episode_id=live.id, **live.reset_result)


async def run_step(
    manager: EpisodeManager, owner: str, settings: Settings, episode_id: str, body: StepRequest,
    idempotency_key: str | None,
) -> StepResponse:
    """One step (the single route and the batch route)."""
    result = await manager.step(
        owner, episode_id, action_from_request(body.action, settings), expected_turn=body.expected_turn,
        idempotency_key=idempotency_key, mean_logprob=body.mean_logprob,
    )
    return StepResponse(**result)


@router.post("", response_model=ResetResponse, status_code=201, summary="Reset: a new episode and its sandbox")
async def reset(
    body: ResetRequest, manager: ManagerDep, owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ResetResponse:
    return await run_reset(manager, owner, body, idempotency_key)


@router.get("", response_model=EpisodeList, summary="The caller's episodes")
async def list_episodes(
    manager: ManagerDep, owner: OwnerDep,
    status: Annotated[str | None, Query(description="live, finished or interrupted")] = None,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite's OFFSET is a signed 64-bit int
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EpisodeList:
    rows, total = manager.list_episodes(owner, status, offset, limit)
    return EpisodeList(episodes=[EpisodeSummary(**r) for r in rows], total=total, offset=offset, limit=limit)


@router.post("/{episode_id}/step", response_model=StepResponse, summary="Step: one action -> observation, reward")
async def step(
    episode_id: str, body: StepRequest, manager: ManagerDep, owner: OwnerDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> StepResponse:
    return await run_step(manager, owner, settings, episode_id, body, idempotency_key)


@router.get("/{episode_id}", response_model=EpisodeState, summary="State: turn, trajectory so far")
async def get_episode(episode_id: str, manager: ManagerDep, owner: OwnerDep) -> EpisodeState:
    return EpisodeState(**manager.state(owner, episode_id))


@router.get("/{episode_id}/trajectory", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
            summary="The trajectory as JSONL: the reset, then one line per step")
async def trajectory(episode_id: str, manager: ManagerDep, owner: OwnerDep) -> PlainTextResponse:
    state = manager.state(owner, episode_id)
    head = {k: state[k] for k in ("episode_id", "env_id", "task_id", "split", "seed", "options")}
    lines = [json.dumps({"turn": None, **head, **state["reset"]}, ensure_ascii=False)]
    lines += [json.dumps(s, ensure_ascii=False) for s in state["steps"]]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="application/x-ndjson")


@router.post("/{episode_id}/fork", response_model=ResetResponse, status_code=201,
             summary="Fork: a new episode at the same point, by deterministic replay")
async def fork(episode_id: str, manager: ManagerDep, owner: OwnerDep, body: ForkRequest | None = None) -> ResetResponse:
    child = await manager.fork(owner, episode_id, body.turn if body else None)
    last = child.steps[-1]["result"] if child.steps else child.reset_result
    return ResetResponse(episode_id=child.id, observation=last["observation"], info=last["info"])


@router.delete("/{episode_id}", status_code=204, summary="Close: the sandbox is destroyed")
async def close(episode_id: str, manager: ManagerDep, owner: OwnerDep) -> Response:
    await manager.close(owner, episode_id)
    return Response(status_code=204)
