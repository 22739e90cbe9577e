"""The published contract: ``openapi/openapi.json`` matches what the app serves, and names
every route the README lists."""

from __future__ import annotations

import json
from pathlib import Path

from toolgym.server.openapi import render

SPEC_FILE = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"

DESIGN_ROUTES = {
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/v1/version"),
    ("get", "/v1/envs"), ("get", "/v1/envs/{env_id}/tasks"), ("post", "/v1/envs/{env_id}/tasks"),
    ("get", "/v1/envs/{env_id}/tasks/stats"), ("post", "/v1/episodes"), ("get", "/v1/episodes"),
    ("post", "/v1/episodes/{episode_id}/step"), ("get", "/v1/episodes/{episode_id}"),
    ("get", "/v1/episodes/{episode_id}/trajectory"), ("post", "/v1/episodes/{episode_id}/fork"),
    ("delete", "/v1/episodes/{episode_id}"), ("post", "/v1/batch/reset"), ("post", "/v1/batch/step"),
}


def test_openapi_file_is_current() -> None:
    assert SPEC_FILE.read_text(encoding="utf-8") == render(), (
        "openapi/openapi.json drifted from the app: run `python -m toolgym.server.openapi`"
    )


def test_openapi_names_every_design_route() -> None:
    spec = json.loads(render())
    served = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert DESIGN_ROUTES <= served, sorted(DESIGN_ROUTES - served)


def test_v1_routes_declare_bearer_auth_and_health_does_not() -> None:
    spec = json.loads(render())
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    for path, ops in spec["paths"].items():
        for op in ops.values():
            if path.startswith("/v1/"):
                assert op.get("security"), f"{path} does not declare bearer auth"
            if path in ("/healthz", "/readyz", "/metrics"):
                assert not op.get("security"), f"{path} must need no key"
