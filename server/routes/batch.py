"""Batches: many resets, or many steps on different episodes, in one request.

A trainer with hundreds of rollouts saves a round trip per episode per turn. Items run
concurrently; each gets its own result, in order, with the HTTP status it would have had on
its own, so one bad item never fails the others. The batch itself is 200 unless its body is
malformed. Steps in a batch must name distinct episodes (their order within one episode
would otherwise be undefined).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from toolgym.errors import ToolGymError, ValidationFailed, http_status
from toolgym.server.deps import ManagerDep, OwnerDep, SettingsDep
from toolgym.server.models import (
    BatchItemResult,
    BatchResetRequest,
    BatchResponse,
    BatchStepRequest,
    ErrorDetail,
)
from toolgym.server.routes.episodes import run_reset, run_step

router = APIRouter(prefix="/v1/batch", tags=["batch"])

log = logging.getLogger(__name__)


async def _settle(work: Awaitable[BaseModel], ok_status: int) -> BatchItemResult:
    try:
        result = await work
    except ToolGymError as exc:
        wire: dict[str, Any] = exc.to_wire()["error"]
        return BatchItemResult(ok=False, status=http_status(exc), error=ErrorDetail(**wire))
    except Exception as exc:  # one item's bug must not take the others down
        log.exception("batch item failed")
        err = ToolGymError(f"internal error ({type(exc).__name__}); the server log has the details")
        return BatchItemResult(ok=False, status=500, error=ErrorDetail(**err.to_wire()["error"]))
    return BatchItemResult(ok=True, status=ok_status, result=result.model_dump(mode="json"))


@router.post("/reset", response_model=BatchResponse, summary="Many resets in one request, one result each")
async def batch_reset(body: BatchResetRequest, manager: ManagerDep, owner: OwnerDep) -> BatchResponse:
    """Run many resets concurrently; each item gets its own result, in order.

    Each item is answered as `POST /v1/episodes` would answer it (201, or its error with that
    status) inside a 200 response, so one failed item never fails the others. Resets in a batch
    take no `Idempotency-Key`.
    """
    results = await asyncio.gather(*(_settle(run_reset(manager, owner, item), 201) for item in body.resets))
    return BatchResponse(results=list(results))


@router.post("/step", response_model=BatchResponse, summary="Steps on many episodes in one request, one result each")
async def batch_step(
    body: BatchStepRequest, manager: ManagerDep, owner: OwnerDep, settings: SettingsDep
) -> BatchResponse:
    """Play one step on each of many episodes concurrently; each item gets its own result, in order.

    Each item is answered as `POST /v1/episodes/{episode_id}/step` would answer it, with its own
    `idempotency_key`, inside a 200 response. Errors: 422 when an episode appears twice in one batch
    (the order of its steps would be undefined: send the next one in the next batch).
    """
    seen: set[str] = set()
    for item in body.steps:
        if item.episode_id in seen:
            raise ValidationFailed(
                f"episode {item.episode_id!r} appears twice in one batch; send its next step in the next batch",
                episode_id=item.episode_id,
            )
        seen.add(item.episode_id)
    results = await asyncio.gather(*(
        _settle(run_step(manager, owner, settings, item.episode_id, item, item.idempotency_key), 200)
        for item in body.steps
    ))
    return BatchResponse(results=list(results))
