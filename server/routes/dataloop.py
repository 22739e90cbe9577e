"""The data loop: grow failing tasks, retire mastered ones, judge a task's label.

LoopTool's loop served over HTTP; the logic is in ``toolgym.server.dataloop`` and
``toolgym.server.judge``. Which env can be expanded or judged is the env family's own
declaration (its capabilities, ``toolgym.envs.base``); an env without one answers 422.
The judge is ``request.app.state.judge`` (see ``build_judge``): a server without one
answers the judge route with 422 ``judge_not_configured``; a judge that is down or talks
nonsense gives 503 ``judge_unavailable`` (retryable), never a 500.
"""

from __future__ import annotations

import logging
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Request

from toolgym.errors import ToolGymError
from toolgym.server import dataloop
from toolgym.server.deps import ManagerDep, OwnerDep, SettingsDep
from toolgym.server.judge import Judge, JudgeNotConfigured, JudgeUnavailable
from toolgym.server.models import (
    ErrorResponse,
    ExpandRejection,
    ExpandRequest,
    ExpandResponse,
    JudgeRequest,
    JudgeResponse,
    JudgeVote,
    RetireRequest,
    RetireResponse,
    UnretireRequest,
    UnretireResponse,
)
from toolgym.server.routes._actions import action_from_request

__all__ = ["JudgeDep", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/envs", tags=["data loop"])


async def _judge(request: Request) -> Judge:
    judge = getattr(request.app.state, "judge", None)
    if judge is None:
        raise JudgeNotConfigured(
            "this server has no label judge: set judge_base_url and judge_model"
            " (TOOLGYM_JUDGE_BASE_URL, TOOLGYM_JUDGE_MODEL) to an OpenAI-compatible endpoint"
        )
    return cast(Judge, judge)


JudgeDep = Annotated[Judge, Depends(_judge)]


@router.post("/{env_id:path}/tasks/expand", response_model=ExpandResponse,
             summary="Grow verified variants of failing tasks (LoopTool's EDDE)")
async def expand_tasks(env_id: str, body: ExpandRequest, manager: ManagerDep, owner: OwnerDep) -> ExpandResponse:
    def run() -> dataloop.Expansion:
        return dataloop.expand(
            manager.tasks, manager.store, env_id, task_ids=body.task_ids, statuses=body.status,
            splits=body.splits, n=body.n, seed=body.seed,
        )

    result = await manager.run_blocking(run)
    return ExpandResponse(
        created=result.created, rejected=result.rejected, skipped=result.skipped, seed=result.seed,
        rejections=[ExpandRejection(parent_id=r.parent_id, reason=r.reason) for r in result.rejections],
    )


@router.post("/{env_id:path}/tasks/retire", response_model=RetireResponse,
             summary="Retire tasks: no sampler draws them; they still reset by id")
async def retire_tasks(env_id: str, body: RetireRequest, manager: ManagerDep, owner: OwnerDep) -> RetireResponse:
    def run() -> tuple[list[str], list[str]]:
        return dataloop.retire(
            manager.tasks, manager.store, env_id, task_ids=body.task_ids, status=body.status, splits=body.splits
        )

    retired, already = await manager.run_blocking(run)
    return RetireResponse(retired=retired, already_retired=already)


@router.post("/{env_id:path}/tasks/unretire", response_model=UnretireResponse,
             summary="Put retired tasks back in the draw")
async def unretire_tasks(
    env_id: str, body: UnretireRequest, manager: ManagerDep, owner: OwnerDep
) -> UnretireResponse:
    def run() -> tuple[list[str], list[str]]:
        return dataloop.unretire(manager.tasks, manager.store, env_id, body.task_ids)

    back, not_retired = await manager.run_blocking(run)
    return UnretireResponse(unretired=back, not_retired=not_retired)


@router.post(
    "/{env_id:path}/tasks/{task_id}/judge", response_model=JudgeResponse,
    summary="Judge a task's label against the policy's answer (LoopTool's JGLV)",
    responses={
        422: {"model": ErrorResponse, "description": "judge_not_configured, or an env whose tasks cannot be judged"},
        503: {"model": ErrorResponse, "description": "judge_unavailable: too many votes failed; retryable"},
    },
)
async def judge_task(
    env_id: str, task_id: str, body: JudgeRequest, manager: ManagerDep, owner: OwnerDep,
    settings: SettingsDep, judge: JudgeDep,
) -> JudgeResponse:
    family = manager.tasks.family(env_id)
    graded = dataloop.judgeable(family)
    task = manager.tasks.get(family.env_id, task_id)
    action = action_from_request(body.response, settings, what="response")
    case = dataloop.judge_case(family, task, action)
    if await manager.run_blocking(graded.grade, task, action):
        return JudgeResponse(verdict="BOTH_CORRECT", votes=[], action="keep", judged_by="verifier")
    try:
        judgement = await judge.judge(case)
    except ToolGymError:
        raise
    except Exception as exc:  # a plug-in judge's own failure degrades the loop, not the server
        log.exception("the judge failed on %s %s", family.env_id, task_id)
        raise JudgeUnavailable(f"the judge failed ({type(exc).__name__}); retry later", retry_after_s=5.0) from exc
    return JudgeResponse(
        verdict=judgement.verdict,  # type: ignore[arg-type]
        votes=[JudgeVote(verdict=v.verdict, error=v.error, model=v.model, reply=v.reply) for v in judgement.votes],
        action=judgement.action,  # type: ignore[arg-type]
        judged_by="judge",
    )
