"""ToolGym episodes as a SkyRL-Gym text environment (``skyrl-gym`` 0.4), registered as ``toolgym``.

``register(base_url=..., api_key=...)`` once, then SkyRL's generator (or anyone) calls
``skyrl_gym.make("toolgym", env_config=..., extras={"env_id": ..., "task_id": ...})``: ``init``
resets a ToolGym episode and returns its messages (tool schemas written into the system message,
since SkyRL's actions are raw text), and each ``step(text)`` sends the raw assistant turn and
returns ToolGym's reward for it. Optional extras: ``seed``, ``options`` (reset options) and
``max_turns`` (SkyRL's generator sets it; the episode is closed and ``done`` once reached).

One exception in an env aborts SkyRL's whole training step, so nothing recoverable raises here.
An infrastructure fault (ToolGym's ``info["status"] == "infra_error"``, a sandbox or server error
left after the client's retries, a server that cannot be reached) ends the episode with
``reward=None`` (never 0: it says nothing about the policy), ``done=True`` and
``metadata["infra_error"] = True``; ``env.infra_error`` and ``get_metrics()["infra_error"]``
carry the same flag. SkyRL has no mask field of its own for this: its generator skips a None
step reward, and a trainer drops (zeroes the loss mask of) every trajectory whose env reports
``infra_error`` (docs/trainers/skyrl.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skyrl_gym import register as _skyrl_register
from skyrl_gym.envs import registration as _registration
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput

from toolgym.client import EnvClient, RetryPolicy, StepResult
from toolgym.errors import ToolGymError
from toolgym.integrations._shared import with_tools_system_prompt

__all__ = ["ENV_ID", "ToolGymTextEnv", "register"]

ENV_ID = "toolgym"
"""The SkyRL env id ``register`` adds."""


class ToolGymTextEnv(BaseTextEnv):  # type: ignore[misc]
    """One ToolGym episode per instance, as SkyRL's generator makes one env per trajectory.

    Args:
        env_config: SkyRL's per-env config; ``timeout_s`` and ``max_retries`` tune the client.
        extras: the dataset row's extras: ``env_id`` (required), ``task_id``, ``seed``,
            ``options``, ``max_turns``.
        base_url: the ToolGym server (else ``$TOOLGYM_BASE_URL``).
        api_key: its key (else ``$TOOLGYM_API_KEY``).
    """

    def __init__(self, env_config: Mapping[str, Any] | None = None, extras: Mapping[str, Any] | None = None,
                 base_url: str | None = None, api_key: str | None = None) -> None:
        super().__init__()
        config = dict(env_config or {})
        self.extras = dict(extras or {})
        if "env_id" not in self.extras:
            raise ValueError("extras must name the ToolGym env: extras={'env_id': 'toolgym/ToolUse-v0', ...}")
        self.max_turns = int(self.extras.get("max_turns") or 0)
        retry = RetryPolicy(max_retries=int(config.get("max_retries", RetryPolicy.max_retries)))
        self.client = EnvClient(base_url, api_key, timeout_s=float(config.get("timeout_s", 120.0)), retry=retry)
        self.episode_id: str | None = None
        self.infra_error = False
        self.error: str | None = None
        self.total_reward = 0.0

    def init(self, prompt: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Reset a ToolGym episode; its messages (with the tools prompt) replace SkyRL's ``prompt``.

        A failed reset returns ``prompt`` unchanged with ``metadata["infra_error"]``; the first
        ``step`` then ends the trajectory, masked.
        """
        try:
            reset = self.client.reset(self.extras["env_id"], self.extras.get("task_id"),
                                      seed=self.extras.get("seed"), options=self.extras.get("options"))
        except ToolGymError as exc:
            self._fault(f"reset failed: {type(exc).__name__}: {exc}")
            return prompt, {"infra_error": True, "error": self.error}
        self.episode_id = reset.episode_id
        messages = with_tools_system_prompt(reset.observation.get("messages", []), reset.observation.get("tools") or [])
        return messages, {"episode_id": reset.episode_id, "infra_error": False, "info": reset.info}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        """Send the raw assistant turn; ToolGym's observation messages and reward come back."""
        self.turns += 1
        if self.episode_id is None:
            return self._masked()
        try:
            result: StepResult = self.client.step(self.episode_id, action, expected_turn=self.turns - 1)
        except ToolGymError as exc:
            self._fault(f"step {self.turns - 1} failed: {type(exc).__name__}: {exc}")
            return self._masked()
        if result.info.get("status") == "infra_error":
            self._fault(f"step {self.turns - 1}: infra_error: {result.info.get('reason')}")
            return self._masked()
        self.total_reward += result.reward
        done = result.terminated or result.truncated or (0 < self.max_turns <= self.turns)
        metadata = {"episode_id": self.episode_id, "infra_error": False, "status": result.info.get("status"),
                    "terminated": result.terminated, "truncated": result.truncated, "info": result.info}
        if done:
            self.close()
        return BaseTextEnvStepOutput(observations=list(result.observation.get("messages", [])), reward=result.reward,
                                     done=done, metadata=metadata)

    def _fault(self, message: str) -> None:
        self.infra_error, self.error = True, message

    def _masked(self) -> BaseTextEnvStepOutput:
        self.close()
        return BaseTextEnvStepOutput(observations=[], reward=None, done=True,
                                     metadata={"episode_id": self.episode_id, "infra_error": True, "error": self.error})

    def get_metrics(self) -> dict[str, Any]:
        """Per-trajectory metrics; ``infra_error`` (0 or 1) averages to the batch's fault rate."""
        return {"infra_error": float(self.infra_error), "turns": self.turns, "total_reward": self.total_reward}

    def close(self) -> None:
        """End the remote episode (its sandbox goes with it) and the connections; idempotent, never raises."""
        episode_id, self.episode_id = self.episode_id, None
        if episode_id is not None:
            try:
                self.client.close(episode_id)
            except ToolGymError:
                pass  # the server reaps an idle episode anyway
        self.client.close_client()


def register(*, base_url: str | None = None, api_key: str | None = None) -> None:
    """Register (or re-register) the SkyRL env id ``toolgym`` against one ToolGym server.

    The entry point is an import path, so a SkyRL worker process that imports this module and
    calls ``register`` makes the same env; ``None`` arguments fall back on ``$TOOLGYM_BASE_URL``
    and ``$TOOLGYM_API_KEY`` when each env is made.
    """
    if ENV_ID in _registration.registry:
        _registration.deregister(ENV_ID)
    _skyrl_register(id=ENV_ID, entry_point=f"{__name__}:ToolGymTextEnv",
                    kwargs={"base_url": base_url, "api_key": api_key})

