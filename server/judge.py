"""A pluggable label judge: LoopTool's Judge-Guided Label Verification (PAPERS.md §2).

When the policy's answer to a task scores 0, either the policy is wrong or the task's label
is. LoopTool asks a judge model to compare the two: the *label* is "Response 1", the
*policy's answer* "Response 2", and the judge answers with one of

- ``RESPONSE1_INCORRECT``: the label is wrong (the policy may be right) -> relabel;
- ``RESPONSE2_INCORRECT``: the policy is wrong, the label right -> keep the task;
- ``BOTH_CORRECT``: both are acceptable -> keep (the reward rule is stricter than the judge);
- ``BOTH_INCORRECT``: neither is -> drop the task.

It asks several times and takes the majority. Here a ``Judge`` is anything with an async
``judge(case) -> Judgement``; ``OpenAIJudge`` asks any OpenAI-compatible chat endpoint
(vLLM, SGLang, llama.cpp, a hosted API) ``votes`` times, concurrently, each vote bounded by
``timeout_s``. ``majority`` turns votes into one verdict:

- a verdict named by more than half of the votes asked for wins (3 votes: 2 agree; 2 votes:
  both agree), as LoopTool's "at least 2 of 3";
- no such verdict, every vote a verdict: ``no_consensus`` (a real disagreement; keep);
- no such verdict because votes failed (endpoint down, HTTP error, timeout, an answer naming
  no verdict): ``JudgeUnavailable``, a 503 with ``retryable`` -- the data loop degrades, it
  never crashes the server and never invents a verdict.

Failed votes are reported with the verdict, so a caller sees that 1 of 3 timed out.

The prompt follows LoopTool's idea (``dataloop/judgement_label_verification.py``: tools,
conversation, the two responses, a fixed one-token verdict first), in ToolGym's own words and
for any env family, not only function calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from toolgym.errors import JudgeNotConfigured, JudgeUnavailable

__all__ = [
    "ACTIONS",
    "VERDICTS",
    "Judge",
    "JudgeCase",
    "JudgeNotConfigured",
    "JudgeUnavailable",
    "Judgement",
    "OpenAIJudge",
    "Vote",
    "build_judge",
    "judge_messages",
    "majority",
    "parse_verdict",
]

Verdict = Literal["RESPONSE1_INCORRECT", "RESPONSE2_INCORRECT", "BOTH_CORRECT", "BOTH_INCORRECT"]
VERDICTS: tuple[Verdict, ...] = ("RESPONSE1_INCORRECT", "RESPONSE2_INCORRECT", "BOTH_CORRECT", "BOTH_INCORRECT")

ACTIONS: dict[str, str] = {
    "RESPONSE1_INCORRECT": "relabel_suggested",
    "RESPONSE2_INCORRECT": "keep",
    "BOTH_CORRECT": "keep",
    "BOTH_INCORRECT": "drop_suggested",
    "no_consensus": "keep",
}
"""What the data loop should do with the task for each outcome (ToolGym never relabels or
drops on its own: the trainer's pipeline decides)."""

API_KEY_ENV = "TOOLGYM_JUDGE_API_KEY"
MAX_REPLY_EXCERPT = 300


@dataclass(frozen=True)
class JudgeCase:
    """What the judge sees: the conversation the policy was given, its tools (OpenAI
    schemas, may be empty), the task's label and the policy's answer, both as text."""

    messages: Sequence[Mapping[str, Any]]
    label: str
    response: str
    tools: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Vote:
    """One judge call: its ``verdict``, or ``error`` (``timeout``, ``unreachable``,
    ``http_<status>``, ``bad_response``, ``unparsable``) when it gave none."""

    verdict: Verdict | None
    error: str | None = None
    model: str | None = None
    reply: str = ""
    """The start of the judge's text (its short analysis), for humans."""


@dataclass(frozen=True)
class Judgement:
    verdict: str
    """One of ``VERDICTS`` or ``no_consensus``."""
    votes: tuple[Vote, ...] = field(default_factory=tuple)

    @property
    def action(self) -> str:
        return ACTIONS[self.verdict]


class Judge(Protocol):
    """Anything that compares a policy's answer with a task's label. Raise
    ``JudgeUnavailable`` when no verdict can be reached for reasons of the judge's own."""

    async def judge(self, case: JudgeCase) -> Judgement: ...


# --- the verdict: parsing and the majority ----------------------------------------------------
_TOKEN = re.compile(r"RESPONSE1_INCORRECT|RESPONSE2_INCORRECT|BOTH_CORRECT|BOTH_INCORRECT", re.IGNORECASE)


def _strip_reasoning(text: str) -> str:
    return text.rsplit("</think>", 1)[-1].strip() if "</think>" in text else text.strip()


def parse_verdict(text: str) -> Verdict | None:
    """The verdict a judge's reply states, or None. Reasoning up to ``</think>`` is dropped;
    the first non-empty line must name exactly one verdict (a line naming several, like an
    echoed ``[RESPONSE1_INCORRECT/RESPONSE2_INCORRECT/...]``, names none); a reply whose first
    line names none may still name exactly one anywhere."""
    body = _strip_reasoning(text)
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return None
    for scope in (lines[0], body):
        found = {m.group(0).upper() for m in _TOKEN.finditer(scope)}
        if len(found) == 1:
            (token,) = found
            return token  # type: ignore[return-value]
        if len(found) > 1:
            return None
    return None


def majority(votes: Sequence[Vote], asked: int) -> Judgement:
    """One verdict from ``votes`` (module doc): a verdict with more than ``asked / 2`` votes;
    else ``no_consensus`` if every vote gave a verdict; else ``JudgeUnavailable``."""
    counts = Counter(v.verdict for v in votes if v.verdict is not None)
    if counts:
        verdict, count = counts.most_common(1)[0]
        if count * 2 > asked:
            return Judgement(verdict, tuple(votes))
    failed = [v for v in votes if v.verdict is None]
    if not failed and len(votes) >= asked:
        return Judgement("no_consensus", tuple(votes))
    errors = Counter(v.error or "unknown" for v in failed)
    summary = ", ".join(f"{n} {e}" for e, n in sorted(errors.items()))
    raise JudgeUnavailable(
        f"the judge gave no majority: {len(failed)} of {asked} votes failed ({summary});"
        " retry later, or raise judge_timeout_s if votes timed out",
        retry_after_s=5.0, votes=[_vote_wire(v) for v in votes],
    )


def _vote_wire(vote: Vote) -> dict[str, Any]:
    return {"verdict": vote.verdict, "error": vote.error, "model": vote.model, "reply": vote.reply}


# --- the prompt -------------------------------------------------------------------------------
_SYSTEM = """You check the labels of a training set for an AI assistant. You are shown a \
conversation, the tools the assistant could call, and two candidate answers to the \
conversation's last request. Decide, for each answer on its own, whether it is correct.

An answer is correct when it does what the user asked: the right tools with the right \
arguments (nothing missing, nothing invented, no needless calls), or, where no tool fits or \
the question is not a tool question, a plain answer without tool calls; for a math question, \
the right final value. Two different answers can both be correct.

Available tools:
<tools>
{tools}
</tools>"""

_USER = """## Conversation
{conversation}

## Response 1
{label}

## Response 2
{response}

## Your reply
Start with exactly one of these four words, alone on the first line:
RESPONSE1_INCORRECT (only Response 1 is wrong), RESPONSE2_INCORRECT (only Response 2 is wrong), \
BOTH_CORRECT, BOTH_INCORRECT.
Then at most two sentences on what the wrong answer got wrong and what the right approach is."""


def _conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        parts.append(f"{str(message.get('role', 'user')).upper()}:\n{text}")
    return "\n\n".join(parts)


def judge_messages(case: JudgeCase) -> list[dict[str, str]]:
    """The chat messages one vote sends (module doc): label as Response 1, answer as 2."""
    tools = "\n".join(json.dumps(t, ensure_ascii=False, sort_keys=True) for t in case.tools) or "(none)"
    return [
        {"role": "system", "content": _SYSTEM.format(tools=tools)},
        {"role": "user", "content": _USER.format(
            conversation=_conversation(case.messages), label=case.label, response=case.response,
        )},
    ]


# --- an OpenAI-compatible endpoint ------------------------------------------------------------
class OpenAIJudge:
    """Asks ``{base_url}/chat/completions`` ``votes`` times, concurrently, and takes the
    majority. ``model`` may name several models separated by commas: vote ``i`` asks model
    ``i mod len(models)`` (LoopTool's consensus across judge models). ``temperature`` is 0.7
    by default so that votes of a single model can differ (LoopTool asks several models at
    0); ``max_tokens`` leaves room for a reasoning model's thinking, which is dropped before
    the verdict is read. Each vote is bounded by ``timeout_s`` in total. A client is opened
    per judgement, so a judge holds no connection and needs no closing."""

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, votes: int = 3,
        timeout_s: float = 60.0, temperature: float = 0.7, max_tokens: int = 4096,
    ) -> None:
        if votes < 2:
            raise ValueError("judge votes must be at least 2 (LoopTool takes a majority of several votes)")
        if timeout_s <= 0:
            raise ValueError("judge_timeout_s must be positive")
        models = [m.strip() for m in model.split(",") if m.strip()]
        if not models:
            raise ValueError("judge_model must name a model")
        self.base_url = base_url.rstrip("/")
        self.models = tuple(models)
        self.api_key = api_key
        self.votes = votes
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_tokens = max_tokens

    def __repr__(self) -> str:  # never the key
        return f"OpenAIJudge({self.base_url!r}, models={list(self.models)}, votes={self.votes})"

    async def judge(self, case: JudgeCase) -> Judgement:
        messages = judge_messages(case)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers) as client:
            votes = await asyncio.gather(*(
                self._vote(client, self.models[i % len(self.models)], messages) for i in range(self.votes)
            ))
        return majority(votes, self.votes)

    async def _vote(self, client: httpx.AsyncClient, model: str, messages: list[dict[str, str]]) -> Vote:
        body = {"model": model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        try:
            response = await asyncio.wait_for(
                client.post(f"{self.base_url}/chat/completions", json=body), self.timeout_s
            )
        except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException):
            return Vote(None, "timeout", model)
        except httpx.HTTPError as exc:
            return Vote(None, "unreachable", model, reply=str(exc)[:MAX_REPLY_EXCERPT])
        if response.status_code >= 400:
            return Vote(None, f"http_{response.status_code}", model, reply=response.text[:MAX_REPLY_EXCERPT])
        try:
            content = response.json()["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(type(content).__name__)
        except (ValueError, LookupError, TypeError):
            return Vote(None, "bad_response", model, reply=response.text[:MAX_REPLY_EXCERPT])
        verdict = parse_verdict(content)
        reply = _strip_reasoning(content)[:MAX_REPLY_EXCERPT]
        return Vote(verdict, None if verdict else "unparsable", model, reply=reply)


def build_judge(settings: Any, environ: Mapping[str, str] | None = None) -> Judge | None:
    """The judge ``settings`` configure (``judge_base_url``, ``judge_model``, ``judge_votes``,
    ``judge_timeout_s``; the key from ``settings.judge_api_key`` or ``TOOLGYM_JUDGE_API_KEY``),
    or None when ``judge_base_url`` is unset. Reads the environment only when called."""
    base_url = getattr(settings, "judge_base_url", None) or None
    if base_url is None:
        return None
    env = os.environ if environ is None else environ
    api_key = getattr(settings, "judge_api_key", None) or env.get(API_KEY_ENV) or None
    return OpenAIJudge(
        base_url, getattr(settings, "judge_model", "") or "", api_key=api_key,
        votes=int(getattr(settings, "judge_votes", 3)), timeout_s=float(getattr(settings, "judge_timeout_s", 60.0)),
    )
