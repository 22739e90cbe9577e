"""The ToolGym client.

``EnvClient`` (blocking), ``AsyncEnvClient`` (asyncio), ``FleetClient`` and
``AsyncFleetClient`` (several servers as one) and ``RemoteEnv`` (a ``gymnasium.Env``). Needs
only httpx, gymnasium and pydantic (and ``websockets`` for ``AsyncEnvClient(protocol="ws")``).
"""

from toolgym.client._async import AsyncEnvClient
from toolgym.client._core import ResetResult, RetryPolicy, StepResult
from toolgym.client._fleet import AsyncFleetClient, FleetClient
from toolgym.client._sync import EnvClient
from toolgym.client.gym import ChatAction, ChatObservation, RemoteEnv, register_envs

__all__ = [
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
