"""What every trainer adapter needs: tools as typed callables, the tools prompt, parsing, episodes.

A trainer meets a ToolGym episode in one of three ways, and this module has one helper for each:

- it wants the task's tools as Python functions with type hints and a Google docstring (TRL,
  ``transformers.utils.get_json_schema``): ``tool_function`` builds one from an OpenAI tool schema;
- it renders its own prompt from raw text (verl, SkyRL): ``tools_system_prompt`` writes the
  Hermes/Qwen2.5 tools block, and ``parse_tool_calls`` reads ``<tool_call>`` tags back with the same
  parser the server uses (``toolgym.envs.actions``), so the adapter and the env agree on what a call is;
- it steps an episode and must keep an infrastructure fault apart from a reward of 0:
  ``EpisodeRun`` sums the step rewards and sets ``infra_error`` instead, and ``episode_return``
  is then ``None``, never 0. Each adapter maps that ``None`` to its trainer's mask.

``run_sync`` runs a coroutine on one background event loop, for trainers that call tools from
plain functions; every ``AsyncEnvClient`` an adapter makes lives on that loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import keyword
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from toolgym.actions import Action, AssistantMessage, message_from_wire
from toolgym.client import AsyncEnvClient, RetryPolicy, StepResult
from toolgym.envs.actions import parse_tool_call_tags, strip_end_tokens
from toolgym.errors import EpisodeLost, EpisodeNotFound, ToolGymError

__all__ = [
    "CALL_TOOL",
    "CALL_TOOL_SCHEMA",
    "INFRA_ERROR",
    "EpisodeRun",
    "is_infra_failure",
    "make_client",
    "parse_tool_calls",
    "run_sync",
    "task_prompt",
    "tool_function",
    "tool_output",
    "tool_responses",
    "tools_system_prompt",
    "with_tools_system_prompt",
]

T = TypeVar("T")

INFRA_ERROR = "infra_error"
"""The ``info["status"]`` of a step the server could not play for reasons of its own."""

CALL_TOOL = "call_tool"
CALL_TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": CALL_TOOL,
        "description": "Call one of the task's tools (listed in the task) and return its output.",
        "parameters": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The name of the task's tool to call."},
                "arguments": {"type": "object", "description": "The tool's arguments, as a JSON object."},
            },
            "required": ["name", "arguments"],
        },
    },
}
"""The one generic tool a trainer with a fixed tool list offers: each task's own tools go through it."""

_JSON_TYPES: dict[str, type] = {
    "string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict,
}


# --- tools -----------------------------------------------------------------------------------------
def _function(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``function`` part of an OpenAI tool schema (a bare function schema is accepted too)."""
    fn = schema.get("function", schema)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ValueError(f"not an OpenAI tool schema: {dict(schema)!r}")
    return fn


def tool_function(schema: Mapping[str, Any], invoke: Callable[[str, dict[str, Any]], str]) -> Callable[..., str]:
    """A Python function with the tool's name, typed keyword parameters and a Google docstring.

    Calling it calls ``invoke(name, arguments)`` with the arguments that were given (omitted optional
    ones are left out, not sent as ``None``). Trainers that read tool schemas off Python callables
    (TRL, ``transformers.utils.get_json_schema``) then show the model the schema the task declared.

    Raises:
        ValueError: the schema has no name, or a name or parameter that is no Python identifier.
    """
    fn = _function(schema)
    name = str(fn["name"])
    params = fn.get("parameters") or {}
    properties: Mapping[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or ())
    for ident in (name, *properties):
        if not ident.isidentifier() or keyword.iskeyword(ident):
            raise ValueError(f"tool {name!r}: {ident!r} cannot be a Python name")
    parameters, annotations, arg_lines = [], {}, []
    for pname, spec in properties.items():
        kind: Any = _JSON_TYPES.get(str(spec.get("type")), str) if isinstance(spec, Mapping) else str
        if pname not in required:
            kind = kind | None
        annotations[pname] = kind
        parameters.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                            default=inspect.Parameter.empty if pname in required else None))
        doc = spec.get("description") if isinstance(spec, Mapping) else None
        arg_lines.append(f"    {pname}: {' '.join(str(doc or pname).split())}")

    def call(**arguments: Any) -> str:
        return invoke(name, {k: v for k, v in arguments.items() if v is not None or k in required})

    annotations["return"] = str
    call.__name__ = call.__qualname__ = name
    call.__annotations__ = annotations
    call.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    summary = " ".join(str(fn.get("description") or f"The {name} tool.").split())
    call.__doc__ = summary + ("\n\nArgs:\n" + "\n".join(arg_lines) if arg_lines else "")
    return call


def tools_system_prompt(tools: Sequence[Mapping[str, Any]], system: str = "") -> str:
    """A system message offering ``tools`` in the Hermes/Qwen2.5 format (the one Qwen's chat template writes).

    For trainers that build prompts from text: the model is told to answer calls as
    ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, which ``parse_tool_calls`` and the
    server read back. ``system`` (the task's own system message) comes first.
    """
    lines = "\n".join(json.dumps(dict(t) if "function" in t else {"type": "function", "function": dict(t)},
                                 ensure_ascii=False) for t in tools)
    head = f"{system}\n\n" if system else ""
    return (
        f"{head}# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within"
        " <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def with_tools_system_prompt(messages: Sequence[Mapping[str, Any]],
                             tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` (copied) with ``tools`` offered in their system message (``tools_system_prompt``).

    For trainers whose policy acts in raw text and gets no ``tools=`` argument (SkyRL,
    verifiers): the schemas must be in the prompt for the model to answer with ``<tool_call>``
    blocks. A task without a system message gets one.
    """
    out = [dict(m) for m in messages]
    if not tools:
        return out
    if out and out[0].get("role") == "system":
        out[0]["content"] = tools_system_prompt(tools, str(out[0].get("content") or "").strip())
    else:
        out.insert(0, {"role": "system", "content": tools_system_prompt(tools)})
    return out


def tool_responses(messages: Sequence[Mapping[str, Any]]) -> str:
    """An observation's messages as one user turn: each tool result in a ``<tool_response>`` block.

    For a trainer whose conversation has no tool role to give them (the assistant's calls were
    text, so there is no ``tool_call_id`` to answer), in the form Qwen's and Hermes' chat
    templates render tool results.
    """
    parts = []
    for message in messages:
        content = str(message.get("content") or "")
        parts.append(f"<tool_response>\n{content}\n</tool_response>" if message.get("role") == "tool" else content)
    return "\n".join(parts)


def parse_tool_calls(text: str) -> AssistantMessage:
    """The raw assistant turn ``text`` as an assistant message with OpenAI ``tool_calls``.

    The server's own parser does the reading (trailing ``<|im_end|>`` stripped, a malformed
    block skipped), so an adapter that decides "tool call or final answer" from this agrees with
    the episode. No call parsed means the message is a final answer (``tool_calls`` empty).
    """
    parsed = parse_tool_call_tags(strip_end_tokens(text))
    return message_from_wire({"content": parsed.content or None, "tool_calls": [c.to_openai() for c in parsed.calls]})


def task_prompt(observation: Mapping[str, Any], call_tool: str = CALL_TOOL) -> str:
    """A reset observation as user-turn text: the task's messages, then its tools, to be called through ``call_tool``.

    For trainers that fix the tool list when they start (TRL, verl) while each ToolUse task has
    its own tools: the model is offered one generic tool, ``call_tool(name, arguments)``, and this
    text tells it which tools the task has (their OpenAI schemas).
    """
    parts = [str(m.get("content", "")) for m in observation.get("messages") or [] if isinstance(m, Mapping)]
    tools = observation.get("tools") or []
    if tools:
        listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        parts.append(f"Call these tools through {call_tool}(name, arguments):\n<tools>\n{listed}\n</tools>")
    return "\n\n".join(p for p in parts if p)


def tool_output(observation: Mapping[str, Any]) -> str:
    """The text of an observation's ``tool`` messages, one per line, as the trainer shows it to the model."""
    messages = observation.get("messages") or []
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, Mapping) and m.get("role") == "tool")


# --- episodes --------------------------------------------------------------------------------------
def is_infra_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the infrastructure's fault (sandbox, server, network), not the policy's.

    Retryable errors (``Unavailable`` and its sandbox, capacity and transport cases, ``RateLimited``)
    that outlived the client's retries, and an episode that vanished (``EpisodeLost``,
    ``EpisodeNotFound``): a row hit by one of these has no reward at all, so it is masked, not
    scored 0. Other ``ToolGymError``s (an unknown env or task, a malformed request) are the
    caller's mistakes and should surface.
    """
    return isinstance(exc, ToolGymError) and (exc.retryable or isinstance(exc, EpisodeLost | EpisodeNotFound))


@dataclass
class EpisodeRun:
    """One ToolGym episode as a trainer's rollout sees it: its return, or why it has none.

    ``rewards`` holds every step's reward; ``infra_error`` says why the episode cannot be scored
    (a step answered ``status == "infra_error"``, or an infrastructure error outlived the client's
    retries). After that no step is sent and ``episode_return`` is ``None``.
    """

    client: AsyncEnvClient
    env_id: str
    task_id: str | None = None
    episode_id: str | None = None
    observation: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)
    done: bool = False
    infra_error: str | None = None

    @property
    def episode_return(self) -> float | None:
        """The sum of the step rewards, or ``None`` when an infrastructure fault hit the episode."""
        return None if self.infra_error is not None else float(sum(self.rewards))

    @property
    def turn(self) -> int:
        """How many steps the episode has played (the ``expected_turn`` of the next one)."""
        return len(self.rewards)

    async def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> bool:
        """Start the episode; False (``infra_error`` set) when the infrastructure could not.

        An error that is no infrastructure fault (unknown env or task, bad options) is raised.
        """
        try:
            started = await self.client.reset(self.env_id, self.task_id, seed=seed,
                                              options=dict(options) if options else None)
        except ToolGymError as exc:
            if not is_infra_failure(exc):
                raise
            self._fail(exc)
            return False
        self.episode_id, self.observation, self.info = started.episode_id, started.observation, started.info
        return True

    async def step(self, action: Action) -> StepResult | None:
        """Play one turn; ``None`` when the episode is over, was never started, or hit an infrastructure fault.

        ``expected_turn`` is sent, so a step the client resent after a lost answer is played once.
        """
        if self.done or self.infra_error is not None or self.episode_id is None:
            return None
        try:
            result = await self.client.step(self.episode_id, action, expected_turn=self.turn)
        except ToolGymError as exc:
            if not is_infra_failure(exc):
                raise
            self._fail(exc)
            await self.close()
            return None
        if result.info.get("status") == INFRA_ERROR:
            self.infra_error = f"{INFRA_ERROR}: {result.info.get('reason') or 'the server could not play the step'}"
            await self.close()
            return None
        self.rewards.append(float(result.reward))
        self.done = result.terminated or result.truncated
        return result

    async def close(self) -> None:
        """Close the episode on the server if it is still open (errors ignored: it is being let go)."""
        if self.episode_id is not None and not self.done:
            self.done = True
            try:
                await self.client.close(self.episode_id)
            except ToolGymError:
                pass

    def _fail(self, exc: ToolGymError) -> None:
        self.infra_error = f"{exc.code}: {exc}"


def make_client(base_url: str | None, api_key: str | None, retry: RetryPolicy | None = None) -> AsyncEnvClient:
    """An ``AsyncEnvClient``; without ``base_url``/``api_key`` it reads ``TOOLGYM_BASE_URL``/``TOOLGYM_API_KEY``."""
    return AsyncEnvClient(base_url, api_key, retry=retry)


# --- a background loop for synchronous trainers ----------------------------------------------------
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="toolgym-integrations", daemon=True).start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
    """Run ``coro`` on the adapters' one background event loop and wait for its result.

    Trainers that call tools and rewards from plain functions (TRL) use this; an
    ``AsyncEnvClient`` is bound to the loop it first ran on, so every coroutine that touches one
    must go through here. Must not be called from that loop itself (it would wait on itself).
    """
    future: Future[T] = asyncio.run_coroutine_threadsafe(coro, _background_loop())
    return future.result(timeout_s)
