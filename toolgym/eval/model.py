"""An OpenAI-compatible chat endpoint as the policy (``toolgym eval --policy model``).

The endpoint gets the chat so far and the tools; its reply (``tool_calls``, or tags in plain
``content`` as a model served without a tool parser writes them) is the action, parsed by
the env as any action. Requests go through ToolGym's one chat client (``toolgym.chat``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from toolgym.chat import AsyncChat, ChatEndpoint, ChatError
from toolgym.eval.policies import Conversation, assistant_message
from toolgym.eval.tasks import task_seed

__all__ = ["ModelEndpointError", "ModelPolicy"]


class ModelEndpointError(Exception):
    """The model endpoint failed (after retries) or answered something unreadable.

    The episode is then counted as an error, never scored.
    """


class ModelPolicy:
    """An OpenAI-compatible chat endpoint as the policy.

    ``base_url`` is the API root (e.g. ``http://127.0.0.1:8001/v1``) or the full
    ``.../chat/completions`` URL. 429s, 5xx, timeouts and transport errors are retried
    ``max_retries`` times with backoff; each request may take ``timeout_s`` in total. With
    ``seed``, each request carries a seed drawn from it, the task and the turn, so that a rerun
    asks the same thing.
    """

    name = "model"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, temperature: float = 0.0,
                 max_tokens: int | None = None, seed: int | None = None, timeout_s: float = 300.0,
                 max_retries: int = 4, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.endpoint = ChatEndpoint(base_url, api_key=api_key, request_timeout_s=timeout_s,
                                     timeout_knob="ModelPolicy timeout_s", max_retries=max_retries,
                                     backoff_s=0.5, max_backoff_s=30.0)
        self.url = self.endpoint.url
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.max_retries = max_retries
        self._chat = AsyncChat(self.endpoint, transport=transport)

    async def aclose(self) -> None:
        """Close the connections to the endpoint."""
        await self._chat.aclose()

    def request_body(self, conversation: Conversation) -> dict[str, Any]:
        """The chat completion request for the conversation's next turn."""
        body: dict[str, Any] = {"model": self.model, "messages": conversation.messages,
                                "temperature": self.temperature}
        if conversation.tools:
            body["tools"] = conversation.tools
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.seed is not None:
            body["seed"] = task_seed(self.seed, f"{conversation.task.id}/{conversation.turn}") % 2**31
        return body

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        """The endpoint's reply as the action: its tool calls (normalized to OpenAI's shape) and its text.

        Raises ``ModelEndpointError``.
        """
        try:
            completion = await self._chat.complete(self.request_body(conversation))
        except ChatError as exc:
            after = f" (after {exc.attempts - 1} retries)" if exc.attempts > 1 else ""
            raise ModelEndpointError(f"{exc}{after}") from exc
        calls = []
        for i, raw in enumerate(completion.tool_calls):
            fn = raw.get("function")
            if not isinstance(fn, Mapping):
                continue
            arguments = fn.get("arguments", "{}")
            calls.append({"id": str(raw.get("id") or f"call_{i}"), "type": "function", "function": {
                "name": str(fn.get("name") or "")[:256],
                "arguments": arguments if isinstance(arguments, str | dict) else json.dumps(arguments)}})
        return assistant_message(completion.content, calls)
