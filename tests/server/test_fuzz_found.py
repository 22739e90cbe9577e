"""Regressions found by the schemathesis run (tests/server/test_openapi_fuzz.py), kept as
plain tests so they never depend on the fuzzer drawing the same case again."""

from __future__ import annotations

from typing import Any

import httpx

KEY = "found-key"


def test_list_offset_past_int64_is_a_422_not_a_500(server_factory: Any) -> None:
    # SQLite's OFFSET is a signed 64-bit integer; a larger one raised OverflowError (a 500).
    server = server_factory("process", api_keys=(KEY,))
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as http:
        assert http.get("/v1/episodes", params={"offset": 2**63 - 1}).status_code == 200
        too_far = http.get("/v1/episodes", params={"offset": 2**63})
        assert too_far.status_code == 422, too_far.text
        assert too_far.json()["error"]["code"] == "validation_failed"



def test_trajectory_content_type_is_the_documented_one(server_factory: Any) -> None:
    # The route answered application/x-ndjson while the spec promised only text/plain.
    import json
    from pathlib import Path

    from server_kit import register, reset, tooluse_record

    spec = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "openapi.json").read_text())
    documented = spec["paths"]["/v1/episodes/{episode_id}/trajectory"]["get"]["responses"]["200"]["content"]
    server = server_factory("process", api_keys=(KEY,))
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as http:
        (task_id,) = register(http, tooluse_record({}))
        episode_id = reset(http, task_id)["episode_id"]
        got = http.get(f"/v1/episodes/{episode_id}/trajectory")
        assert got.status_code == 200
        assert got.headers["content-type"].split(";")[0] in documented, (got.headers["content-type"], documented)
