"""Env families and their tasks."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from toolgym.envs.options import options_schema
from toolgym.errors import BadRequest, ValidationFailed
from toolgym.server.deps import ManagerDep, OwnerDep
from toolgym.server.episodes import COMMON_OPTIONS
from toolgym.server.models import (
    EnvList,
    EnvSpec,
    RegisterTasksRequest,
    RegisterTasksResponse,
    TaskInfo,
    TaskPage,
    TaskStatsResponse,
)

router = APIRouter(prefix="/v1/envs", tags=["envs"])

NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/ndjson")


@router.get("", response_model=EnvList, summary="Env families: formats, reward spec, reset options")
async def list_envs(manager: ManagerDep, owner: OwnerDep) -> EnvList:
    """Every env family the server serves: its formats, reward spec, reset options and task counts."""
    envs = []
    for env_id, family in sorted(manager.families.items()):
        options = options_schema(family.options_type)
        for name, doc in COMMON_OPTIONS.items():
            options[name] = {"type": "str", "doc": doc}
        envs.append(EnvSpec(
            id=env_id, description=family.description, action_format=family.action_format,
            observation_format=family.observation_format, reward_spec=family.reward_spec,
            record_format=family.record_format, options=options, tasks=manager.tasks.counts(env_id),
        ))
    return EnvList(envs=envs)


@router.get("/{env_id:path}/tasks/stats", response_model=TaskStatsResponse,
            summary="Per-task reward statistics from the episodes served")
async def task_stats(env_id: str, manager: ManagerDep, owner: OwnerDep) -> TaskStatsResponse:
    """Per-task reward statistics from the episodes this server has served for the env.

    These classify tasks (e.g. the ones a policy still gets wrong) for ``POST .../expand``.
    """
    from toolgym.server.frontier import task_stats as compute

    family = manager.tasks.family(env_id)
    stats = await manager.run_blocking(compute, manager.tasks, manager.store, family.env_id)  # SQLite: off the loop
    return TaskStatsResponse(env_id=family.env_id, tasks=stats)


@router.get("/{env_id:path}/tasks", response_model=TaskPage, summary="Task ids and public metadata (never the gold)")
async def list_tasks(
    env_id: str, manager: ManagerDep, owner: OwnerDep,
    split: Annotated[str | None, Query(description="train, validation or test")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TaskPage:
    """A page of the env's task ids and public metadata, optionally of one split; the gold never leaves the server."""
    tasks, total = manager.tasks.page(env_id, split, offset, limit)
    return TaskPage(
        tasks=[TaskInfo(id=t.id, split=t.split, metadata=dict(t.metadata)) for t in tasks],
        total=total, offset=offset, limit=limit,
    )


def _parse_ndjson(body: bytes) -> list[Any]:
    records = []
    for lineno, line in enumerate(body.decode("utf-8", "strict").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise BadRequest(f"line {lineno} of the JSONL body is not valid JSON: {exc}", line=lineno) from None
    return records


@router.post(
    "/{env_id:path}/tasks", response_model=RegisterTasksResponse, status_code=201,
    summary="Register tasks: JSON {tasks: [...]} or a JSONL body (application/x-ndjson)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/RegisterTasksRequest"}},
        "application/x-ndjson": {"schema": {"type": "string", "description": "One task record per line."}},
    }}},
)
async def register_tasks(env_id: str, request: Request, manager: ManagerDep, owner: OwnerDep) -> RegisterTasksResponse:
    """Register tasks sent as JSON (``{"tasks": [...]}``) or as a JSONL body, one record per line.

    All or nothing: a bad record or an id already registered fails the whole request.
    """
    manager.tasks.family(env_id)  # 404 with a suggestion before reading a large body
    body = await request.body()
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if ctype in NDJSON_TYPES:
            records = _parse_ndjson(body)
        elif ctype in ("application/json", ""):
            records = RegisterTasksRequest.model_validate_json(body).tasks
        else:
            raise BadRequest(f"unsupported content type {ctype!r}; send application/json or application/x-ndjson")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    except ValidationError as exc:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            raise BadRequest("the request body is not valid JSON") from None
        raise ValidationFailed(f"tasks: {errors[0].get('msg')}") from None
    if not records:
        raise ValidationFailed("no task records in the body")
    ids = await manager.run_blocking(manager.tasks.register, env_id, records)
    return RegisterTasksResponse(ids=ids)
