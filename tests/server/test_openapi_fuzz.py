"""Schemathesis against openapi/openapi.json on a live server (loopback, process sandboxes):
every operation, fed generated requests, answers without a 5xx and with a response that
matches the published contract (status code, content type, body schema).

Budgets come from the hypothesis profile (tests/conftest.py): a few examples per operation
by default, many under ``HYPOTHESIS_PROFILE=slow`` (scripts/slow-tests.sh)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from server_kit import Server, ServerFarm, register, reset, tooluse_record

pytestmark = pytest.mark.fuzz

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
KEY = "fuzz-key"
RUN_KEYS = tuple(f"fuzz-run-{i}" for i in range(1000))
"""One API key per stateful run: each run starts with an empty episode list of its own, so what
it draws depends on its own calls only (hypothesis needs runs it can tell apart)."""
CI_EXAMPLES = 6
"""Examples per operation in the default run; the slow profile's budget applies otherwise."""


@pytest.fixture(scope="module")
def live(farm: ServerFarm) -> tuple[Server, dict[str, str]]:
    server = farm.start("process", api_keys=(KEY, *RUN_KEYS), max_live_episodes=64)
    with server.client(KEY) as http:
        (task_id,) = register(http, tooluse_record({}))
        reset(http, task_id)  # an episode exists, so the list and get routes have one to show
    return server, {"Authorization": f"Bearer {KEY}"}


INT64_MAX = 2**63 - 1


def _past_int64(value: Any) -> bool:
    """Whether a body holds a number above the spec's largest integer (seeds are int64).

    Schemathesis sometimes generates 9223372036854776000 for ``maximum: 9223372036854775807``
    (the bound passes through a double on its side); the server is right to refuse it, so
    such a case is not counted as a schema-valid request."""
    if isinstance(value, dict):
        return any(_past_int64(v) for v in value.values())
    if isinstance(value, list):
        return any(_past_int64(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool) and value > INT64_MAX


def _counts(case: Any) -> bool:
    """Whether a generated case is judged: not one of schemathesis's two misreadings above
    (an int64 bound crossed on its side; unknown query keys, which HTTP APIs ignore, counted
    as invalid)."""
    if _past_int64(case.body):
        return False
    negative = case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE
    return not negative or set(case.query or {}) <= {p.name for p in case.operation.query}


def _slow() -> bool:
    return settings.get_current_profile_name() == "slow"


def _budget() -> int:
    """Examples per operation and mode: the slow profile's tenth (38 tests share it)."""
    return max(CI_EXAMPLES, settings().max_examples // 10) if _slow() else CI_EXAMPLES


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_path(str(SPEC))
    return [result.ok() for result in schema.get_all_operations()]


OPERATIONS = _operations()


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> dict[str, Any]:
    """The spec gives the NDJSON task upload as one string; it goes out as that text."""
    text = value if isinstance(value, str) else json.dumps(value)
    return {"data": text.encode("utf-8", errors="surrogatepass")}


def _refused_by_the_model(response: Any) -> str | None:
    """Why a schema-valid request was refused for not matching the schema after all (the
    spec promises what the model refuses), or None.

    A 422 from a rule the schema cannot state (a cross-field ``value_error``, one episode
    twice in a batch, no judge configured) is the server's documented answer, not a
    contract break; a type or bound error on a schema-valid request is."""
    if response.status_code != 422:
        return None
    error = response.json().get("error", {})
    details = error.get("details") or {}
    model_errors = [e for e in details.get("errors", []) if e.get("type") != "value_error"]
    return f"{error.get('message')}: {model_errors}" if model_errors else None


def _takes_input(operation: Any) -> bool:
    """Whether the operation has an input that a request can get wrong.

    A path parameter that is any string (``/openenv/{env_name}/health``) has no invalid value,
    so an operation with nothing else has no negative case to generate.
    """
    spec = json.loads(SPEC.read_text(encoding="utf-8"))["paths"][operation.path][operation.method.lower()]

    def can_be_invalid(parameter: dict[str, Any]) -> bool:
        return parameter.get("in") != "path" or bool(set(parameter.get("schema", {})) - {"title", "type"})

    return "requestBody" in spec or any(can_be_invalid(p) for p in spec.get("parameters", []))


CASES = [
    pytest.param(op, mode, id=f"{op.method.upper()} {op.path} {mode.value}")
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _takes_input(op)  # no input, no invalid input to send
]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_operation_conforms(live: tuple[Server, dict[str, str]], operation: Any, mode: GenerationMode) -> None:
    server, auth = live

    @settings(max_examples=_budget(), suppress_health_check=list(HealthCheck), deadline=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        assume(_counts(case))
        # Our own reading of "schema-valid data is accepted" replaces schemathesis's (above).
        response = case.call_and_validate(base_url=server.base_url, headers=auth, timeout=30,
                                          excluded_checks=[positive_data_acceptance])
        if mode is GenerationMode.POSITIVE and operation.path != "/v1/ws":  # a plain GET there is 426
            problem = _refused_by_the_model(response)
            assert problem is None, f"schema-valid {operation.method.upper()} {operation.path} refused: {problem}"

    check()


def _check_acceptance(response: Any, case: Any) -> None:
    positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
    if positive and case.operation.path != "/v1/ws":  # a plain GET there is 426
        problem = _refused_by_the_model(response)
        label = f"{case.operation.method.upper()} {case.operation.path}"
        sent = f"{case.media_type}: {case.body!r}, headers {case.headers!r}"
        assert problem is None, f"schema-valid {label} ({sent}) refused: {problem}"


def test_stateful_workflows(live: tuple[Server, dict[str, str]]) -> None:
    """Sequences that follow the links schemathesis infers from the spec (reset -> get, fork,
    step, close; list -> get ...), so the routes see real episode ids, not only random ones."""
    server, _ = live
    keys = iter(RUN_KEYS)

    class Workflow(schemathesis.openapi.from_path(str(SPEC)).as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.auth = {"Authorization": f"Bearer {next(keys)}"}

        def teardown(self) -> None:
            with httpx.Client(base_url=server.base_url, headers=self.auth, timeout=30) as http:
                for episode in http.get("/v1/episodes", params={"status": "live"}).json()["episodes"]:
                    http.delete(f"/v1/episodes/{episode['episode_id']}")

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.base_url, "headers": self.auth, "timeout": 30}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            assume(_counts(case))
            case.validate_response(response, excluded_checks=[positive_data_acceptance],
                                   transport_kwargs=kwargs or None)
            _check_acceptance(response, case)

    slow = _slow()
    examples, steps = (100, 12) if slow else (4, 5)
    Workflow.run(settings=settings(max_examples=examples, stateful_step_count=steps,
                                   deadline=None, suppress_health_check=list(HealthCheck),
                                   # The server keeps its state between runs, so a replayed
                                   # sequence can go differently: report the first failure as is.
                                   phases=[Phase.explicit, Phase.reuse, Phase.generate]))
