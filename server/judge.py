"""A pluggable label judge: LoopTool's Judge-Guided Label Verification (arXiv 2511.09148).

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
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from toolgym.chat import AsyncChat, ChatBadReply, ChatEndpoint, ChatHTTPError, ChatTimeout, ChatUnreachable
from toolgym.errors import JudgeNotConfigured, JudgeUnavailable
from toolgym.server.settings import Settings

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

MAX_REPLY_EXCERPT = 300


@dataclass(frozen=True)
class JudgeCase:
    """What the judge sees: the conversation the policy was given, its tools, the label and the answer.

    The tools are OpenAI schemas and may be empty; the task's label and the policy's answer are
    both text.
    """

    messages: Sequence[Mapping[str, Any]]
    label: str
    response: str
    tools: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Vote:
    """One judge call: its ``verdict``, or the ``error`` that kept it from giving one.

    ``error`` is ``timeout``, ``unreachable``, ``http_<status>``, ``bad_response`` or ``unparsable``.
    """

    verdict: Verdict | None
    error: str | None = None
    model: str | None = None
    reply: str = ""
    """The start of the judge's text (its short analysis), for humans."""


@dataclass(frozen=True)
class Judgement:
    """A judge's answer: the verdict and the votes it came from."""

    verdict: str
    """One of ``VERDICTS`` or ``no_consensus``."""
    votes: tuple[Vote, ...] = field(default_factory=tuple)

    @property
    def action(self) -> str:
        """What the data loop should do with the task (``ACTIONS``)."""
        return ACTIONS[self.verdict]


class Judge(Protocol):
    """Anything that compares a policy's answer with a task's label.

    Raise ``JudgeUnavailable`` when no verdict can be reached for reasons of the judge's own.
    """

    async def judge(self, case: JudgeCase) -> Judgement:
        """The verdict on ``case``; raises ``JudgeUnavailable`` when none can be reached."""
        ...


# --- the verdict: parsing and the majority ----------------------------------------------------
_TOKEN = re.compile(r"RESPONSE1_INCORRECT|RESPONSE2_INCORRECT|BOTH_CORRECT|BOTH_INCORRECT", re.IGNORECASE)


def _strip_reasoning(text: str) -> str:
    return text.rsplit("</think>", 1)[-1].strip() if "</think>" in text else text.strip()


def parse_verdict(text: str) -> Verdict | None:
    """The verdict a judge's reply states, or None.

    Reasoning up to ``</think>`` is dropped; the first non-empty line must name exactly one
    verdict (a line naming several, like an echoed ``[RESPONSE1_INCORRECT/RESPONSE2_INCORRECT/...]``,
    names none); a reply whose first line names none may still name exactly one anywhere.
    """
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
    """One verdict from ``votes`` (module doc): a verdict with more than ``asked / 2`` votes.

    Else ``no_consensus`` if every vote gave a verdict; else ``JudgeUnavailable``.
    """
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
    """Asks ``{base_url}/chat/completions`` ``votes`` times, concurrently, and takes the majority.

    ``model`` may name several models separated by commas: vote ``i`` asks model
    ``i mod len(models)`` (LoopTool's consensus across judge models). ``temperature`` is 0.7
    by default so that votes of a single model can differ (LoopTool asks several models at
    0); ``max_tokens`` leaves room for a reasoning model's thinking, which is dropped before
    the verdict is read. Each vote is one request (``toolgym.chat``), bounded by
    ``timeout_s`` in total and never retried: a failed vote is reported, and the caller
    retries the judgement. A client is opened per judgement, so a judge holds no connection
    and needs no closing.
    """

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, votes: int = 3,
        timeout_s: float = 60.0, temperature: float = 0.7, max_tokens: int = 4096,
    ) -> None:
        if votes < 2:
            raise ValueError("judge votes must be at least 2 (LoopTool takes a majority of several votes)")
        models = [m.strip() for m in model.split(",") if m.strip()]
        if not models:
            raise ValueError("judge_model must name a model")
        self.endpoint = ChatEndpoint(base_url, api_key=api_key, request_timeout_s=timeout_s,
                                     timeout_knob="judge_timeout_s")
        self.models = tuple(models)
        self.votes = votes
        self.temperature = temperature
        self.max_tokens = max_tokens

    def __repr__(self) -> str:  # never the key
        return f"OpenAIJudge({self.endpoint.base_url!r}, models={list(self.models)}, votes={self.votes})"

    async def judge(self, case: JudgeCase) -> Judgement:
        """Ask every vote at once; the majority of their verdicts (see ``majority``)."""
        messages = judge_messages(case)
        async with AsyncChat(self.endpoint) as chat:
            votes = await asyncio.gather(*(
                self._vote(chat, self.models[i % len(self.models)], messages) for i in range(self.votes)
            ))
        return majority(votes, self.votes)

    async def _vote(self, chat: AsyncChat, model: str, messages: list[dict[str, str]]) -> Vote:
        body = {"model": model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        try:
            completion = await chat.post(body)
        except ChatTimeout:
            return Vote(None, "timeout", model)
        except ChatUnreachable as exc:
            return Vote(None, "unreachable", model, reply=str(exc)[:MAX_REPLY_EXCERPT])
        except ChatHTTPError as exc:
            return Vote(None, f"http_{exc.status}", model, reply=exc.text[:MAX_REPLY_EXCERPT])
        except ChatBadReply as exc:
            return Vote(None, "bad_response", model, reply=exc.text[:MAX_REPLY_EXCERPT])
        if completion.content is None:
            return Vote(None, "bad_response", model, reply=completion.text[:MAX_REPLY_EXCERPT])
        verdict = parse_verdict(completion.content)
        reply = _strip_reasoning(completion.content)[:MAX_REPLY_EXCERPT]
        return Vote(verdict, None if verdict else "unparsable", model, reply=reply)


def build_judge(settings: Settings) -> Judge | None:
    """The judge ``settings`` configure, or None when ``judge_base_url`` is unset.

    The settings read are ``judge_base_url``, ``judge_api_key``, ``judge_model``, ``judge_votes``
    and ``judge_timeout_s``. The key is a setting like the others (``Settings.from_env`` reads it
    from ``TOOLGYM_JUDGE_API_KEY``): nothing here reads the environment.
    """
    if not settings.judge_base_url:
        return None
    return OpenAIJudge(
        settings.judge_base_url, settings.judge_model, api_key=settings.judge_api_key,
        votes=settings.judge_votes, timeout_s=settings.judge_timeout_s,
    )
