"""The client's public surface: pinned ``__all__``s, the version, gymnasium registration, the
parity of the sync and async clients, and a bare import that pulls in no server dependency."""

from __future__ import annotations

import inspect
import subprocess
import sys

import gymnasium

import toolgym
import toolgym.client
import toolgym.errors
from toolgym.client import AsyncEnvClient, EnvClient


def test_client_all_is_pinned_and_sorted() -> None:
    assert toolgym.client.__all__ == [
        "AsyncEnvClient",
        "AsyncFleetClient",
        "ChatAction",
        "ChatObservation",
        "EnvClient",
        "FleetClient",
        "RemoteEnv",
        "ResetResult",
        "RetryPolicy",
        "StepResult",
        "register_envs",
    ]
    assert toolgym.client.__all__ == sorted(toolgym.client.__all__)
    for name in toolgym.client.__all__:
        assert getattr(toolgym.client, name) is not None


def test_errors_all_is_pinned_and_sorted() -> None:
    assert toolgym.errors.__all__ == [
        "AtCapacity",
        "BadRequest",
        "Conflict",
        "DuplicateTask",
        "EnvNotFound",
        "EpisodeFinished",
        "EpisodeLost",
        "EpisodeNotFound",
        "HTTP_STATUS",
        "JudgeNotConfigured",
        "JudgeUnavailable",
        "NotFound",
        "Overloaded",
        "PayloadTooLarge",
        "QuotaExceeded",
        "RateLimited",
        "SandboxError",
        "SandboxTimeout",
        "ShuttingDown",
        "StoreUnavailable",
        "TaskNotFound",
        "ToolGymError",
        "TurnMismatch",
        "Unauthorized",
        "Unavailable",
        "UnsupportedMediaType",
        "ValidationFailed",
        "error_from_wire",
    ]
    assert toolgym.errors.__all__ == sorted(toolgym.errors.__all__)
    for name in toolgym.errors.__all__:
        assert getattr(toolgym.errors, name) is not None


def test_version() -> None:
    assert isinstance(toolgym.__version__, str) and toolgym.__version__[0].isdigit()
    assert toolgym.API_VERSION == "v1"


def test_import_registers_the_remote_envs_with_gymnasium() -> None:
    for env_id in ("toolgym/ToolUse-v0", "toolgym/CodeMath-v0", "toolgym/FunctionCall-v0", "toolgym/Remote-v0"):
        spec = gymnasium.spec(env_id)
        assert spec.entry_point == "toolgym.client.gym:RemoteEnv"
        assert spec.nondeterministic is False  # gymnasium's checker then tests seeded replay
    assert gymnasium.spec("toolgym/CodeMath-v0").kwargs == {"env_id": "toolgym/CodeMath-v0"}
    toolgym.client.register_envs()  # idempotent


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_async_client_has_every_method_of_the_sync_one() -> None:
    sync = _public_methods(EnvClient)
    asynchronous = _public_methods(AsyncEnvClient)
    sync.pop("close_client")  # the connection pool: close_client() / aclose()
    asynchronous.pop("aclose")
    assert sorted(sync) == sorted(asynchronous)
    for name, signature in sync.items():
        assert inspect.iscoroutinefunction(getattr(AsyncEnvClient, name)), name
        assert str(signature) == str(asynchronous[name]), name


def test_the_bare_client_import_needs_no_server_dependency() -> None:
    code = (
        "import sys, toolgym, toolgym.client, toolgym.errors\n"
        "loaded = [m for m in ('fastapi', 'docker', 'uvicorn', 'starlette', 'toolgym.server', 'toolgym.envs')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
