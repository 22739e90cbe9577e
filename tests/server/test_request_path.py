"""The request path's cost rules: what keeps a request off a worker thread and free of a second validation."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from toolgym.server import Settings, create_app
from toolgym.server.models import StepResponse
from toolgym.server.routes.episodes import json_response


def _calls(dependant: Dependant) -> list[Any]:
    out = []
    for sub in dependant.dependencies:
        out.append(sub.call)
        out += _calls(sub)
    return out


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every ``APIRoute`` of an app, looking into included routers (FastAPI keeps them nested)."""
    out: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "original_router"):
            out += _api_routes(route.original_router.routes)
    return out


def _is_async(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def test_every_route_dependency_is_async(tmp_path: Any) -> None:
    """A plain ``def`` dependency runs on a worker thread: a round trip per request per dependency."""
    app = create_app(Settings(db_path=str(tmp_path / "t.db")))
    routes = _api_routes(app.routes)
    assert any(r.path == "/v1/episodes/{episode_id}/step" for r in routes)
    sync = sorted({
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes for call in _calls(route.dependant) if not _is_async(call)
    })
    assert not sync, sync


def test_json_response_is_what_fastapi_would_answer() -> None:
    """The hot routes answer ``json_response(model)``: the same bytes FastAPI's response_model path writes."""
    from fastapi._compat import ModelField  # the field FastAPI builds for a response_model
    from fastapi.utils import create_model_field

    model = StepResponse.model_validate({
        "observation": {"messages": [{"role": "tool", "content": "Zürich → 1.5e300 ✓"}], "extra_key": [1, None]},
        "reward": float("nan"), "terminated": False, "truncated": True, "info": {"status": "ok", "x": float("inf")},
    })
    field: ModelField = create_model_field(name="Response_step", type_=StepResponse, mode="serialization")
    assert json_response(model).body == field.serialize_json(model, by_alias=True)
    assert b"tools" not in json_response(model).body
    assert json_response(model, 201).status_code == 201
    assert json_response(model).headers["content-type"] == "application/json"
