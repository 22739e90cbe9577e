"""Evaluating a policy on a split through the HTTP API: what ``toolgym eval`` runs.

Three policies, each an object with ``async act(conversation) -> assistant message``:

- ``ModelPolicy``: any OpenAI-compatible chat endpoint (``POST {url}/chat/completions``) gets
  the chat so far and the tools; its reply (``tool_calls`` or plain ``content``, tags
  included) is the action.
- ``ReferencePolicy``: replays a task's ``reference_solution`` turn by turn, then answers with
  the gold ``answer``. The server never reveals gold, so both come from the task file the user
  registered: the ceiling row of the table.
- ``RandomPolicy``: calls random tools with random (or no) arguments, or answers nonsense;
  seeded per task: the floor row.

``evaluate`` runs one episode per task with bounded concurrency (``AsyncEnvClient``), and
``summarize``/``format_table`` turn the episodes into FTRL's Solve-P/R/F1 (the episode
``info["metrics"]`` of the final step: ``solve_precision``, ``solve_rate``, ``solve_f1``)
per question type and overall, each the mean over episodes, with the mean return.

An episode the server could not serve (an HTTP error left after the client's retries, or
``info["status"] == "infra_error"``) is counted apart as an error, never scored 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from toolgym.client import AsyncEnvClient
from toolgym.envs.actions import parse_action
from toolgym.envs.base import AssistantMessage
from toolgym.errors import DuplicateTask, ToolGymError

__all__ = [
    "METRICS",
    "QUESTION_TYPES",
    "Conversation",
    "EpisodeResult",
    "EvalTask",
    "ModelEndpointError",
    "ModelPolicy",
    "Policy",
    "RandomPolicy",
    "ReferencePolicy",
    "Row",
    "evaluate",
    "format_table",
    "list_tasks",
    "load_task_file",
    "register_tasks",
    "select_tasks",
    "summarize",
    "task_seed",
]

QUESTION_TYPES = ("single_hop", "parallel_single_hop", "multi_hop", "parallel_multi_hop")
"""FTRL's four question types (PAPERS.md §1), always shown in the table, in this order."""
METRICS = ("solve_precision", "solve_rate", "solve_f1")
"""Solve-P, Solve-R and Solve-F1, by the names the ToolUse env reports them under."""

REGISTER_CHUNK_RECORDS = 200
REGISTER_CHUNK_BYTES = 4 * 1024 * 1024
"""Below the server's default ``max_request_bytes`` (8 MiB) with room to spare."""


# --- tasks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalTask:
    """One task to evaluate: its id and split on the server, its question type, and (when it
    came from a task file) the full record, gold included, for the reference policy."""

    id: str
    split: str
    question_type: str | None = None
    record: Mapping[str, Any] | None = None


def record_id(record: Mapping[str, Any]) -> str:
    """A record's ``id``, or one derived from its content (stable across runs) when it has none."""
    if record.get("id") is not None:
        return str(record["id"])
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return "eval-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_task_file(path: str) -> list[dict[str, Any]]:
    """The records of a JSONL task file, each given its ``id`` (see ``record_id``); a repeated
    id keeps its first record. Raises ``ValueError`` naming the bad line."""
    records: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: a task record must be a JSON object")
            record["id"] = record_id(record)
            records.setdefault(record["id"], record)
    return list(records.values())


async def list_tasks(client: AsyncEnvClient, env_id: str, split: str | None = None) -> list[dict[str, Any]]:
    """Every task of ``env_id`` on the server (``GET /v1/envs/{env_id}/tasks``, paged):
    ``{id, split, metadata}`` each."""
    out: list[dict[str, Any]] = []
    while True:
        page = await client.tasks(env_id, split, offset=len(out), limit=1000)
        out.extend(page["tasks"])
        if not page["tasks"] or len(out) >= page["total"]:
            return out


def _chunks(records: Sequence[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for record in records:
        n = len(json.dumps(record, ensure_ascii=False).encode("utf-8")) + 1
        if chunk and (len(chunk) >= REGISTER_CHUNK_RECORDS or size + n > REGISTER_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += n
    if chunk:
        yield chunk


async def register_tasks(client: AsyncEnvClient, env_id: str, records: Sequence[dict[str, Any]],
                         known: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Register ``records`` (each with an ``id``) in chunks, skipping ids the server already
    has. Returns ``(registered ids, skipped ids)``.

    ``known`` are ids already listed on the server. A chunk that still meets a duplicate (a
    409 names the first one, e.g. when another client registered it meanwhile) is sent again
    without that record: registration is all-or-nothing per request, so duplicates are
    handled one record at a time."""
    known_ids = set(known)
    skipped = [r["id"] for r in records if r["id"] in known_ids]
    todo = [r for r in records if r["id"] not in known_ids]
    registered: list[str] = []
    for chunk in _chunks(todo):
        while chunk:
            try:
                registered.extend(await client.register_tasks(env_id, chunk))
                break
            except DuplicateTask as exc:
                dup = str(getattr(exc, "task_id", ""))
                if dup not in {r["id"] for r in chunk}:
                    raise
                skipped.append(dup)
                chunk = [r for r in chunk if r["id"] != dup]
    return registered, skipped


async def select_tasks(client: AsyncEnvClient, env_id: str, split: str,
                       records: Sequence[dict[str, Any]] | None = None,
                       say: Callable[[str], None] | None = None) -> list[EvalTask]:
    """The tasks to evaluate. With ``records`` (a task file's, see ``load_task_file``): they
    are registered where missing, and exactly those in ``split`` are returned (a record without
    ``split`` is ``train``, as the server reads it). Without: every task the server lists in
    ``split``. Question types come from the records, else from the server's task metadata.
    Raises ``ValueError`` when a file task sits in another split on the server (an earlier
    record with the same id was kept)."""
    listed = {t["id"]: t for t in await list_tasks(client, env_id)}
    if records is None:
        return [EvalTask(t["id"], t["split"], (t.get("metadata") or {}).get("question_type"))
                for t in listed.values() if t["split"] == split]
    registered, skipped = await register_tasks(client, env_id, records, known=listed)
    if say is not None:
        say(f"tasks: {len(registered)} registered, {len(skipped)} already on the server")
    if registered:
        listed.update({t["id"]: t for t in await list_tasks(client, env_id, split)})
    chosen = [r for r in records if r.get("split", "train") == split]
    moved = [r["id"] for r in chosen if r["id"] in listed and listed[r["id"]]["split"] != split]
    if moved:
        raise ValueError(f"{len(moved)} task(s) of the file are in another split on the server, e.g. {moved[0]!r}:"
                         " the server kept an earlier record with that id")
    return [EvalTask(r["id"], split, r.get("question_type")
                     or (listed.get(r["id"], {}).get("metadata") or {}).get("question_type"), r) for r in chosen]


def task_seed(seed: int, task_id: str) -> int:
    """A per-task seed: episodes do not depend on the order or concurrency they run in."""
    digest = hashlib.sha256(f"{seed}/{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# --- policies -------------------------------------------------------------------------------
@dataclass
class Conversation:
    """What a policy sees of one episode: the chat so far (system, user, then assistant and
    tool messages, tool-call ids as the server numbers them), the tools, and the turn."""

    task: EvalTask
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    turn: int
    rng: random.Random


class Policy(Protocol):
    name: str

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        """The next assistant message: ``{"role": "assistant", "content", "tool_calls"}``."""
        ...


def _call(name: str, arguments: Mapping[str, Any], index: int) -> dict[str, Any]:
    return {"id": f"call_{index}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _assistant(content: str | None = None, tool_calls: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(tool_calls)}


class ReferencePolicy:
    """Replays ``reference_solution`` (a list of turns, each a list of ``{name, arguments}``),
    then answers with the gold ``answer``; both from the task's file record."""

    name = "reference"

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        record = conversation.task.record
        if record is None:
            raise ValueError(f"task {conversation.task.id!r}: the reference policy needs its record (--tasks)")
        turns = record.get("reference_solution") or []
        if conversation.turn < len(turns):
            calls = turns[conversation.turn]
            return _assistant("", [_call(c["name"], c.get("arguments") or {}, i) for i, c in enumerate(calls)])
        return _assistant(str(record.get("answer", "")))

    @staticmethod
    def missing(tasks: Iterable[EvalTask]) -> list[str]:
        """Ids of tasks this policy cannot play (no record, or no reference_solution/answer)."""
        return [t.id for t in tasks if t.record is None or "reference_solution" not in t.record
                or "answer" not in t.record]


def _nonsense(rng: random.Random) -> str:
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(rng.randint(1, 5))]
    return " ".join(words)


def _random_value(schema: Mapping[str, Any], rng: random.Random, depth: int = 0) -> Any:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind) if kind else None
    if kind == "integer":
        return rng.randint(-10, 10_000)
    if kind == "number":
        return round(rng.uniform(-100, 10_000), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        items = schema.get("items")
        items = items if isinstance(items, Mapping) else {}
        return [_random_value(items, rng, depth + 1) for _ in range(rng.randint(1, 2))] if depth < 3 else []
    if kind == "object":
        return {}
    return _nonsense(rng)


class RandomPolicy:
    """Each turn: answer nonsense with probability ``p_answer`` (ending the episode), else call
    1 to ``max_calls`` random tools of the task, each argument random or left out. Seeded by
    the conversation's ``rng`` (one per task)."""

    name = "random"

    def __init__(self, p_answer: float = 0.3, max_calls: int = 3) -> None:
        self.p_answer = p_answer
        self.max_calls = max_calls

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        rng = conversation.rng
        functions = [t.get("function", t) for t in conversation.tools if isinstance(t, Mapping)]
        if not functions or rng.random() < self.p_answer:
            return _assistant(_nonsense(rng))
        calls = []
        for i in range(rng.randint(1, self.max_calls)):
            fn = rng.choice(functions)
            props = (fn.get("parameters") or {}).get("properties") or {}
            arguments = {name: _random_value(spec if isinstance(spec, Mapping) else {}, rng)
                         for name, spec in props.items() if rng.random() < 0.5}
            calls.append(_call(str(fn.get("name", "")), arguments, i))
        return _assistant("", calls)


class ModelEndpointError(Exception):
    """The model endpoint failed (after retries) or answered something unreadable."""


class ModelPolicy:
    """An OpenAI-compatible chat endpoint as the policy. ``base_url`` is the API root (e.g.
    ``http://127.0.0.1:8001/v1``) or the full ``.../chat/completions`` URL. 429s, 5xx and
    transport errors are retried ``max_retries`` times with backoff."""

    name = "model"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, temperature: float = 0.0,
                 max_tokens: int | None = None, seed: int | None = None, timeout_s: float = 300.0,
                 max_retries: int = 4, transport: httpx.AsyncBaseTransport | None = None) -> None:
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.max_retries = max_retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    def request_body(self, conversation: Conversation) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": conversation.messages,
                                "temperature": self.temperature}
        if conversation.tools:
            body["tools"] = conversation.tools
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.seed is not None:
            body["seed"] = task_seed(self.seed, f"{conversation.task.id}/{conversation.turn}") % 2**31
        return body

    async def _post(self, body: dict[str, Any]) -> Any:
        for attempt in range(self.max_retries + 1):
            try:
                response = await self._http.post(self.url, json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        raise ModelEndpointError(f"{self.url} answered non-JSON: {response.text[:200]!r}") from None
                problem = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code != 429 and response.status_code < 500:
                    raise ModelEndpointError(f"{self.url}: {problem}")
            if attempt < self.max_retries:
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random() / 2))
        raise ModelEndpointError(f"{self.url}: {problem} (after {self.max_retries} retries)")

    async def act(self, conversation: Conversation) -> dict[str, Any]:
        reply = await self._post(self.request_body(conversation))
        try:
            message = reply["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise ModelEndpointError(f"{self.url}: no choices[0].message in {str(reply)[:200]!r}") from None
        calls = []
        for i, raw in enumerate(message.get("tool_calls") or []):
            fn = raw.get("function") if isinstance(raw, Mapping) else None
            if not isinstance(fn, Mapping):
                continue
            arguments = fn.get("arguments", "{}")
            calls.append({"id": str(raw.get("id") or f"call_{i}"), "type": "function", "function": {
                "name": str(fn.get("name") or "")[:256],
                "arguments": arguments if isinstance(arguments, str | dict) else json.dumps(arguments)}})
        content = message.get("content")
        return _assistant(content if isinstance(content, str) else None, calls)


# --- episodes -------------------------------------------------------------------------------
@dataclass
class EpisodeResult:
    """One finished (or failed) episode, as written to the trajectories file."""

    task_id: str
    split: str
    question_type: str | None
    episode_id: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    terminated: bool = False
    truncated: bool = False
    error: str | None = None

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    def to_json(self, policy: str) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "split": self.split, "question_type": self.question_type,
            "policy": policy, "episode_id": self.episode_id, "turns": len(self.actions),
            "return": self.total_reward, "metrics": self.metrics, "reason": self.reason,
            "terminated": self.terminated, "truncated": self.truncated, "error": self.error,
            "rewards": self.rewards, "statuses": self.statuses, "actions": self.actions,
            "observations": self.observations, "messages": self.messages, "tools": self.tools,
        }


def _history_message(action: dict[str, Any], turn: int) -> dict[str, Any]:
    """The assistant turn as the chat history keeps it: the calls the server ran (parsed by
    the env's own parser), with the ids its tool messages answer (``call_<turn>_<i>``)."""
    parsed = parse_action(
        AssistantMessage(content=action.get("content"), tool_calls=tuple(action.get("tool_calls") or ())), turn
    )
    if not parsed.calls:
        return {"role": "assistant", "content": action.get("content") or ""}
    return {"role": "assistant", "content": parsed.content or None,
            "tool_calls": [c.to_openai() for c in parsed.calls]}


async def run_episode(client: AsyncEnvClient, env_id: str, task: EvalTask, policy: Policy, *, seed: int,
                      max_turns: int, options: Mapping[str, Any] | None = None) -> EpisodeResult:
    """One episode of ``task`` played by ``policy``, until the env ends it (or ``max_turns``
    steps, a guard: the env enforces its own turn limit)."""
    result = EpisodeResult(task_id=task.id, split=task.split, question_type=task.question_type)
    done = False
    try:
        reset = await client.reset(env_id, task.id, seed=task_seed(seed, task.id), options=dict(options or {}))
        result.episode_id = reset.episode_id
        result.messages = list(reset.observation.get("messages", []))
        result.tools = list(reset.observation.get("tools") or [])
        result.metrics = dict(reset.info.get("metrics", {}))
        conversation = Conversation(task, result.messages, result.tools, 0,
                                    random.Random(task_seed(seed, f"policy/{task.id}")))
        while not done and conversation.turn < max_turns:
            action = await policy.act(conversation)
            step = await client.step(reset.episode_id, action, expected_turn=conversation.turn)
            result.actions.append(action)
            result.observations.append(step.observation)
            result.rewards.append(step.reward)
            result.statuses.append(str(step.info.get("status", "ok")))
            result.metrics = dict(step.info.get("metrics", result.metrics))
            result.messages.append(_history_message(action, conversation.turn))
            result.messages.extend(step.observation.get("messages", []))
            conversation.turn += 1
            done = step.terminated or step.truncated
            result.terminated, result.truncated = step.terminated, step.truncated
            result.reason = step.info.get("reason")
            if step.info.get("status") == "infra_error":
                result.error = f"infra_error at turn {conversation.turn - 1}: {step.info.get('reason')}"
                break
        if not done and result.error is None:
            result.error = f"not finished after {max_turns} turns"
    except (ToolGymError, ModelEndpointError, ValueError, KeyError, TypeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if result.episode_id is not None and not done:
            try:
                await client.close(result.episode_id)
            except ToolGymError:
                pass
    return result


async def evaluate(client: AsyncEnvClient, env_id: str, tasks: Sequence[EvalTask], policy: Policy, *,
                   concurrency: int = 8, seed: int = 0, max_turns: int = 20,
                   options: Mapping[str, Any] | None = None,
                   on_result: Callable[[EpisodeResult], Awaitable[None] | None] | None = None,
                   ) -> list[EpisodeResult]:
    """One episode per task, at most ``concurrency`` at once; results in task order.
    ``on_result`` is called as each episode ends (e.g. to write it and advance a progress bar)."""
    results: list[EpisodeResult | None] = [None] * len(tasks)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(tasks)):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await run_episode(client, env_id, tasks[i], policy, seed=seed, max_turns=max_turns,
                                       options=options)
            results[i] = result
            if on_result is not None:
                pending = on_result(result)
                if pending is not None:
                    await pending

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(tasks))))))
    return [r for r in results if r is not None]


# --- the table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the table: means over the scored episodes of one question type."""

    label: str
    episodes: int
    errors: int
    solve_precision: float | None
    solve_rate: float | None
    solve_f1: float | None
    mean_return: float | None


def _row(label: str, results: Sequence[EpisodeResult]) -> Row:
    scored = [r for r in results if r.error is None]
    n = len(scored)

    def mean(values: Iterable[float]) -> float | None:
        return sum(values) / n if n else None

    return Row(
        label=label, episodes=n, errors=len(results) - n,
        solve_precision=mean(float(r.metrics.get("solve_precision", 0.0)) for r in scored),
        solve_rate=mean(float(r.metrics.get("solve_rate", 0.0)) for r in scored),
        solve_f1=mean(float(r.metrics.get("solve_f1", 0.0)) for r in scored),
        mean_return=mean(r.total_reward for r in scored),
    )


def summarize(results: Sequence[EpisodeResult], question_types: Sequence[str] = QUESTION_TYPES) -> list[Row]:
    """A row per question type (the given ones always, then any others seen), then ``overall``."""
    labels = list(question_types)
    for r in results:
        label = r.question_type or "unknown"
        if label not in labels:
            labels.append(label)
    rows = [_row(label, [r for r in results if (r.question_type or "unknown") == label]) for label in labels]
    return [*rows, _row("overall", results)]


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: Solve-P/R/F1 (FTRL's metrics), mean return, episodes, errors."""
    header = ("question_type", "episodes", "Solve-P", "Solve-R", "Solve-F1", "return", "errors")
    width = max(len(header[0]), *(len(r.label) for r in rows))

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{header[0]:<{width}}  " + "  ".join(f"{h:>8}" for h in header[1:])]
    lines.append("-" * len(lines[0]))
    for r in rows:
        if r.label == "overall":
            lines.append("-" * len(lines[0]))
        cells = (str(r.episodes), num(r.solve_precision), num(r.solve_rate), num(r.solve_f1), num(r.mean_return),
                 str(r.errors))
        lines.append(f"{r.label:<{width}}  " + "  ".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)
