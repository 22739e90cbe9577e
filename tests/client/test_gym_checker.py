"""gymnasium's own env checker on ``RemoteEnv``, for all three env families, against live
servers: the Docker backend for ToolUse and CodeMath, the process backend for FunctionCall
(it needs no sandbox). The checker resets with seeds and compares observations, rewards and
``info`` across seeded replays, so it also checks the server's determinism end to end."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env
from scripted_policies import CODEMATH, FUNCTIONCALL, TOOLUSE

import toolgym  # noqa: F401  (registers the envs)
from toolgym.client import EnvClient, RemoteEnv

FAMILIES = [
    pytest.param(TOOLUSE, "docker", marks=pytest.mark.docker, id="ToolUse"),
    pytest.param(CODEMATH, "docker", marks=pytest.mark.docker, id="CodeMath"),
    pytest.param(FUNCTIONCALL, "process", id="FunctionCall"),
]


@contextmanager
def gymnasium_warnings() -> Iterator[list[str]]:
    """Every warning gymnasium's checker raises while the block runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize(("env_id", "backend"), FAMILIES)
def test_check_env_passes_on_gymnasium_make(server_factory: Callable[..., Any], env_id: str, backend: str) -> None:
    server = server_factory(backend)
    with gymnasium_warnings() as warned:
        env = gymnasium.make(env_id, base_url=server.base_url, api_key=None)
        try:
            assert isinstance(env.unwrapped, RemoteEnv) and env.unwrapped.env_id == env_id
            check_env(env.unwrapped)
            check_env(env)  # wrapped by gymnasium.make's passive checker: warns about that only
        finally:
            env.close()
    assert len(warned) == 1 and "different from the unwrapped version" in warned[0], warned
    with EnvClient(server.base_url) as client:
        assert client.episodes(status="live")["total"] == 0  # every reset closed its predecessor


def test_check_env_passes_on_a_bare_remote_env(process_server: Any) -> None:
    with gymnasium_warnings() as warned:
        env = RemoteEnv(FUNCTIONCALL, process_server.base_url)
        try:
            check_env(env)
        finally:
            env.close()
    # Without a spec the checker cannot remake the env; that is its only remark.
    assert len(warned) == 1 and "alternative render modes" in warned[0], warned
