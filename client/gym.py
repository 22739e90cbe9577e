"""``RemoteEnv``: a ToolGym episode as a ``gymnasium.Env``.

After ``import toolgym``, ``gymnasium.make("toolgym/ToolUse-v0", base_url=..., api_key=...)``
returns one (likewise CodeMath-v0 and FunctionCall-v0; ``toolgym/Remote-v0`` takes any
``env_id``). ``gymnasium.make_vec(..., vectorization_mode="sync" | "async")`` works with
gymnasium's defaults: chat observations have their own shared-memory layout for
``AsyncVectorEnv`` (``toolgym.client._gym_vector`` says why that and not the alternatives).
Under a vector env's autoreset a finished sub-env resets into a new remote episode, and every
``reset`` and ``close`` closes the remote episode before it, so closing the vector env leaves
none open on the server. ``TimeLimit`` (``max_episode_steps=``) truncates on the client side:
the remote episode stays live, untouched, until that next ``reset`` or ``close``.

Observations are dicts ``{"messages": [...], "tools"?: [...]}`` of new chat messages;
actions are the raw assistant turn (a string) or an assistant message dict; any other shape is
an ``invalid_action`` step that leaves the episode as it was. To store the sampled tokens with
the step, pass the step request body instead: ``{"action": <turn>, "sample": {"token_ids": [...],
"logprobs": [...]}}`` (the same body as ``POST /v1/episodes/{id}/step``; ``mean_logprob`` too). The server seed of
every reset is drawn from ``self.np_random``, so ``reset(seed=s)`` and the unseeded resets
after it replay exactly, as gymnasium's ``check_env`` requires.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from toolgym._gym import register_envs
from toolgym.actions import action_from_wire, action_to_wire
from toolgym.client._core import RetryPolicy
from toolgym.client._gym_vector import close_episodes_on_sigterm, register_shared_memory
from toolgym.client._sync import EnvClient
from toolgym.errors import EpisodeNotFound, ValidationFailed

__all__ = ["ChatAction", "ChatObservation", "RemoteEnv", "register_envs"]

_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?"))


DEFAULT_SHARED_MEMORY_BYTES = 1 << 20
"""Room for one observation in ``AsyncVectorEnv``'s shared memory: tool outputs are capped
server-side (``max_output_chars``, 8192 by default), so a turn fills a small part of this."""


class ChatObservation(spaces.Space[dict[str, Any]]):
    """New chat messages (and tool schemas when shown).

    Args:
        shared_memory_bytes: the largest observation, as UTF-8 JSON, that an
            ``AsyncVectorEnv`` with shared memory (gymnasium's default) can pass back.
        seed: seeds ``sample()``.
    """

    def __init__(self, shared_memory_bytes: int = DEFAULT_SHARED_MEMORY_BYTES, seed: int | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)
        if shared_memory_bytes < 1:
            raise ValueError(f"shared_memory_bytes must be positive, not {shared_memory_bytes}")
        self.shared_memory_bytes = shared_memory_bytes

    @property
    def is_np_flattenable(self) -> bool:
        """False: chat has no fixed-size vector form, so ``flatten`` cannot apply."""
        return False

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a dict of chat messages (each with a ``role``), and tools if any."""
        if not isinstance(x, dict) or not isinstance(x.get("messages"), list):
            return False
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in x["messages"]):
            return False
        return "tools" not in x or isinstance(x["tools"], list)

    def sample(self, mask: Any = None, probability: Any = None) -> dict[str, Any]:
        """One random user message: enough for gymnasium's checks, no real observation."""
        length = int(self.np_random.integers(1, 40))
        text = "".join(self.np_random.choice(_ALPHABET, size=length))
        return {"messages": [{"role": "user", "content": text}]}

    def __repr__(self) -> str:
        return f"ChatObservation(shared_memory_bytes={self.shared_memory_bytes})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatObservation) and other.shared_memory_bytes == self.shared_memory_bytes


register_shared_memory(ChatObservation)


class ChatAction(spaces.Space[Any]):
    """An assistant turn: a string, or a dict with ``content`` and/or ``tool_calls``.

    ``sample()`` gives random plain text (a final answer, in tool envs).
    """

    def __init__(self, max_length: int = 200, seed: int | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_length = max_length

    @property
    def is_np_flattenable(self) -> bool:
        """False: a chat turn has no fixed-size vector form."""
        return False

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a valid action shape, by the same rule the server applies."""
        try:
            action_from_wire(x)
        except ValidationFailed:
            return False
        return True

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """Random plain text of at most ``max_length`` characters, never empty."""
        length = int(self.np_random.integers(1, self.max_length))
        return "".join(self.np_random.choice(_ALPHABET, size=length)).strip() or "answer"

    def __repr__(self) -> str:
        return f"ChatAction(max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatAction) and other.max_length == self.max_length


class RemoteEnv(gym.Env[dict[str, Any], Any]):
    """One episode at a time on a ToolGym server.

    Args:
        env_id: the server's env id, e.g. ``toolgym/ToolUse-v0``.
        base_url, api_key: the server and your key (default: the ``TOOLGYM_BASE_URL`` and
            ``TOOLGYM_API_KEY`` variables, then ``http://127.0.0.1:8000`` and no key).
        task_id: reset this task every time (default: the server draws one).
        options: default reset options (per ``GET /v1/envs``), merged with ``reset``'s.
        client: an ``EnvClient`` to share between envs (it is not closed by ``close``).
        shared_memory_bytes: room for one observation in ``AsyncVectorEnv``'s shared memory
            (see ``ChatObservation``); raise it for very large observations.
    """

    # gymnasium declares ``metadata`` an instance variable; a ClassVar here fails mypy.
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        env_id: str = "toolgym/ToolUse-v0",
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        task_id: str | None = None,
        options: dict[str, Any] | None = None,
        client: EnvClient | None = None,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        shared_memory_bytes: int = DEFAULT_SHARED_MEMORY_BYTES,
    ) -> None:
        self.env_id = env_id
        self._owns_client = client is None
        # Without an explicit key, TOOLGYM_API_KEY: so the key need not sit in env.spec.kwargs.
        key = api_key if api_key is not None else os.environ.get("TOOLGYM_API_KEY")
        self.client = client or EnvClient(base_url, key, timeout_s=timeout_s, retry=retry)
        self._task_id = task_id
        self._options = dict(options or {})
        self.episode_id: str | None = None
        self.observation_space = ChatObservation(shared_memory_bytes)
        close_episodes_on_sigterm()  # an AsyncVectorEnv worker that is terminated still closes
        self.action_space = ChatAction()

    def _close_episode(self) -> None:
        if self.episode_id is not None:
            episode_id, self.episode_id = self.episode_id, None
            try:
                self.client.close(episode_id)
            except EpisodeNotFound:
                pass  # already gone on the server (reaped, or the server restarted): closed is closed

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Close the current episode and start a new one.

        This is also what a vector env's autoreset calls, so the episode that just ended (or
        was truncated by ``TimeLimit``) is closed on the server here. ``options`` may name a
        ``task_id`` besides the env's reset options.
        """
        super().reset(seed=seed)
        self._close_episode()
        merged = {**self._options, **(options or {})}
        task_id = merged.pop("task_id", self._task_id)
        server_seed = int(self.np_random.integers(0, 2**62))
        result = self.client.reset(self.env_id, task_id, seed=server_seed, options=merged or None)
        self.episode_id = result.episode_id
        return result.observation, result.info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """One turn.

        An action of no valid shape (not a string, not an assistant message) is not sent: the
        step answers ``info["status"] == "invalid_action"`` with the reason in
        ``info["message"]``, reward 0, no new messages, and the episode stays at its turn. A step
        body ``{"action", "sample"?, "mean_logprob"?}`` sends its ``sample`` (token ids and
        log-probabilities) with the turn, to be stored beside it.
        """
        if self.episode_id is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        sample: dict[str, Any] = {}
        mean_logprob = None
        if isinstance(action, dict) and "action" in action:  # a step body: {"action", "sample"?, "mean_logprob"?}
            sample = dict(action.get("sample") or {})
            mean_logprob = action.get("mean_logprob")
            action = action["action"]
        try:
            wire = action_to_wire(action_from_wire(action))
        except ValidationFailed as exc:
            info = {"status": "invalid_action", "retryable": False, "reward_components": {}, "metrics": {},
                    "output_truncated": False, "message": exc.message}  # a step's info keys
            return {"messages": []}, 0.0, False, False, info
        return self.client.step(self.episode_id, wire, mean_logprob=mean_logprob, token_ids=sample.get("token_ids"),
                                logprobs=sample.get("logprobs")).as_tuple()

    def close(self) -> None:
        """Close the current remote episode (if any) and the client this env owns (idempotent)."""
        try:
            self._close_episode()
        finally:
            if self._owns_client:
                self.client.close_client()
        super().close()
