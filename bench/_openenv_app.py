"""Two small OpenEnv environments for ``bench/peer_openenv.py``, served by OpenEnv's own HTTP
server (``openenv.core.env_server.create_app``). This file runs only in the peer's scratch
virtualenv (``openenv-core``, ``smolagents``), never in ToolGym's; it is our code written
against OpenEnv's public API, shaped like two of OpenEnv's own example envs (whose source is
not on PyPI):

- ``echo_app``: like OpenEnv's ``envs/echo_env``: an ``MCPEnvironment`` with a FastMCP tool
  ``echo_message``; a step is a ``CallToolAction`` (a call to that tool, in process).
- ``coding_app``: like OpenEnv's ``envs/coding_env``: a step runs the action's Python with
  smolagents' ``LocalPythonExecutor`` (an AST interpreter in the server process, no
  subprocess, no container), returning stdout/stderr/exit code.

Serve with: ``uvicorn _openenv_app:echo_app`` (or ``coding_app``) from this folder.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastmcp import FastMCP
from openenv.core.env_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.mcp_environment import MCPEnvironment
from openenv.core.env_server.mcp_types import CallToolAction, CallToolObservation
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field
from smolagents import LocalPythonExecutor


class EchoEnv(MCPEnvironment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        mcp = FastMCP("echo_env")

        @mcp.tool
        def echo_message(message: str) -> str:
            """Echo back the provided message."""
            return message

        super().__init__(mcp)
        self._state = State(episode_id=str(uuid.uuid4()), step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
        self._state = State(episode_id=episode_id or str(uuid.uuid4()), step_count=0)
        return Observation(done=False, reward=0.0, metadata={"status": "ready"})

    def _step_impl(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        return Observation(done=False, reward=0.0, metadata={"error": "use CallToolAction"})

    def step(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        self._state.step_count += 1
        return super().step(action, timeout_s=timeout_s, **kwargs)

    async def step_async(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        self._state.step_count += 1
        return await super().step_async(action, timeout_s=timeout_s, **kwargs)

    @property
    def state(self) -> State:
        return self._state


class CodeAction(Action):
    code: str = Field(description="Python source to execute")


class CodeObservation(Observation):
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


class CodingEnv(Environment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        self._executor = LocalPythonExecutor(additional_authorized_imports=[])
        self._executor.send_tools({})
        self._state = State(episode_id=str(uuid.uuid4()), step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
        self._executor = LocalPythonExecutor(additional_authorized_imports=[])
        self._executor.send_tools({})
        self._state = State(episode_id=episode_id or str(uuid.uuid4()), step_count=0)
        return CodeObservation()

    def step(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        assert isinstance(action, CodeAction)
        self._state.step_count += 1
        try:
            result = self._executor(action.code)
            return CodeObservation(stdout=str(result.logs or ""), exit_code=0)
        except Exception as exc:
            return CodeObservation(stderr=f"{type(exc).__name__}: {exc}", exit_code=1)

    @property
    def state(self) -> State:
        return self._state


echo_app = create_app(EchoEnv, CallToolAction, CallToolObservation, env_name="echo_env", max_concurrent_envs=64)
coding_app = create_app(CodingEnv, CodeAction, CodeObservation, env_name="coding_env", max_concurrent_envs=64)
