"""The generator with an LLM driving FTRL's five stages (arXiv 2508.08791), as the paper does.

```python
from toolgym.taskgen.llm import ChatClient, LLMConfig, LLMReport, generate_with_llm

config = LLMConfig.from_env("http://127.0.0.1:8001/v1", "qwen2.5-32b-instruct")  # key: TOOLGYM_LLM_API_KEY
with ChatClient(config) as client:
    report = LLMReport()
    for record in generate_with_llm(seed=0, count=100, client=client, runner=sandbox.run, report=report):
        ...
```

Any OpenAI-compatible chat endpoint works (``llm_client``, over ``toolgym.chat``). The stages
(``llm_stages``, with their prompts in ``llm_prompts`` and reply checks in ``llm_replies``) keep
the procedural generator's protocols and bookkeeping, so the records have the same format
and pass the same self-verification: the static rules and the data checks here, then every
reference call and probe **in a real sandbox** through ``runner`` (``verify_in_sandbox``).
The model's code is never executed in this process.

A task whose stage could not get a usable reply is dropped and counted under
``llm_unavailable`` (timeouts, 5xx, 429, refused connections, after the retries) or
``llm_invalid_reply`` (malformed or invalid JSON, after the repair turns); the run goes on.
Model-written code meets one rule more than the generator's own: every distractor tool is
called once, in the sandbox, for one of its records (``distractor_broken`` otherwise),
since no reference call reaches it.
Two things stop it: an endpoint that refuses the request itself (``LLMConfigError``: wrong
URL, model or key), and ``max_consecutive_failures`` tasks in a row lost to
``llm_unavailable`` (``LLMUnavailable``: the endpoint is down). A ``SandboxError`` from the
runner propagates as well: a dead sandbox is not a bad task.

Determinism: the same seed and the same replies give the same records (every draw comes
from the attempt's ``random.Random``, and attempts are committed in order whatever
``workers`` is). A model at temperature 0 is not always reproducible; the client's reply
cache (``LLMConfig.cache_path``) makes a run replayable byte for byte.

Choices: reference calls never pass the optional parameters a model invents
(``p_optional_in_reference`` is forced to 0) — their effect is whatever the model's code
does, and only the defaults are verified.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from toolgym.envs.base import Runner
from toolgym.taskgen.decompose import NoScenario
from toolgym.taskgen.ftrl import answer_verify
from toolgym.taskgen.generator import (
    BuiltTask,
    GenerationError,
    GenerationReport,
    Progress,
    build_task,
    verify_built,
)
from toolgym.taskgen.knobs import ScalingKnobs
from toolgym.taskgen.llm_client import (
    API_KEY_ENV,
    ChatClient,
    LLMConfig,
    LLMConfigError,
    LLMError,
    LLMReplyInvalid,
    LLMUnavailable,
    ReplyError,
    parse_json_reply,
)
from toolgym.taskgen.llm_stages import LLMStages
from toolgym.taskgen.verify import sandbox_executor, verify_in_sandbox

__all__ = [
    "API_KEY_ENV",
    "ChatClient",
    "LLMConfig",
    "LLMConfigError",
    "LLMError",
    "LLMReplyInvalid",
    "LLMReport",
    "LLMStages",
    "LLMUnavailable",
    "ReplyError",
    "generate_with_llm",
    "parse_json_reply",
]


@dataclass
class LLMReport(GenerationReport):
    """A ``GenerationReport`` plus what the LLM run cost."""

    sandbox_calls: int = 0
    """Calls run in the sandbox (reference calls and probes)."""
    sandbox_rejected: int = 0
    """Tasks that passed the static checks and failed in the sandbox."""


@dataclass
class _Outcome:
    question: str | None = None
    record: dict[str, Any] | None = None
    reason: str | None = None
    unavailable: bool = False
    error: LLMConfigError | None = None
    sandbox_calls: int = 0
    sandbox_rejected: bool = False


def _check_distractors(task: BuiltTask, runner: Runner, timeout_s: float) -> tuple[str | None, int]:
    """One rule beyond the shared ones, for model-written code: a distractor must work too.

    The reference never calls a distractor, so ask each for one of its own records.
    """
    execute = sandbox_executor(runner, task.codes, timeout_s=timeout_s)
    calls = 0
    for tool in task.toolset.tools:
        if not tool.distractor or not tool.rows:
            continue
        row, attr = tool.rows[0], tool.fields[0]
        expected = str(task.world.get(row).attrs[attr])
        outcome = execute(tool.name, tool.arguments(row, attr))
        calls += 1
        if not outcome.ok or not answer_verify(outcome.text, expected):
            return f"distractor_broken: {tool.name} -> {outcome.text[:200]!r}, expected {expected!r}", calls
    return None, calls


def generate_with_llm(seed: int, count: int, *, client: ChatClient, runner: Runner,
                      knobs: ScalingKnobs | None = None, report: GenerationReport | None = None,
                      progress: Progress | None = None, workers: int = 1, max_consecutive_failures: int = 5,
                      tool_timeout_s: float = 10.0) -> Iterator[dict[str, Any]]:
    """Yield ``count`` ToolUse records (ids ``toolgen-llm-<seed>-<n>``) whose stages an LLM drove.

    Their reference solutions ran correctly in ``runner``'s sandbox.

    ``workers`` attempts run at once (the model's latency dominates); ``report`` (an
    ``LLMReport`` for the sandbox counts) fills as the run goes. Raises ``LLMConfigError``,
    ``LLMUnavailable`` (see the module doc), ``GenerationError`` after ``10 * count + 100``
    rejected attempts, and ``SandboxError``.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    knobs = replace(knobs or ScalingKnobs(), p_optional_in_reference=0.0)
    pipeline = LLMStages(client).pipeline()
    if pipeline.writes_own_code:  # never: the generator must not exec a model's code in-process
        raise AssertionError("the LLM pipeline must not count as the package's own code")
    report = report if report is not None else LLMReport()

    def attempt(n: int) -> _Outcome:
        rng = random.Random(f"toolgen-llm/{seed}/{n}")
        try:
            task = build_task(rng, knobs, pipeline)
        except NoScenario as exc:
            return _Outcome(reason=f"no_scenario: {exc}")
        except LLMConfigError as exc:
            return _Outcome(error=exc)
        except LLMError as exc:
            return _Outcome(reason=f"{exc.code}: {exc}", unavailable=isinstance(exc, LLMUnavailable))
        assert not task.own_code
        question = task.scenario.question
        record = task.record("")
        reasons = verify_built(task, record)  # static rules and data checks: nothing runs
        if reasons:
            return _Outcome(question=question, reason=reasons[0])
        checked = verify_in_sandbox([record], runner, timeout_s=tool_timeout_s)
        if checked.rejected:
            return _Outcome(question=question, reason=checked.rejected[0].reasons[0],
                            sandbox_calls=checked.calls, sandbox_rejected=True)
        problem, calls = _check_distractors(task, runner, tool_timeout_s)
        if problem:
            return _Outcome(question=question, reason=problem, sandbox_calls=checked.calls + calls,
                            sandbox_rejected=True)
        return _Outcome(question=question, record=record, sandbox_calls=checked.calls + calls)

    seen: set[str] = set()
    streak = 0
    limit = 10 * count + 100
    next_attempt = 0
    pending: deque[Future[_Outcome]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="toolgen-llm")
    try:
        while report.kept < count:
            while len(pending) < workers:
                pending.append(executor.submit(attempt, next_attempt))
                next_attempt += 1
            outcome = pending.popleft().result()
            report.attempted += 1
            if isinstance(report, LLMReport):
                report.sandbox_calls += outcome.sandbox_calls
                report.sandbox_rejected += int(outcome.sandbox_rejected)
            if outcome.error is not None:
                raise outcome.error
            streak = streak + 1 if outcome.unavailable else 0
            if outcome.question is not None and outcome.question in seen:
                report.reject("duplicate_question: the question was already generated")
            elif outcome.record is None:
                report.reject(outcome.reason or "malformed: no record")
            else:
                assert outcome.question is not None
                seen.add(outcome.question)
                record = outcome.record
                record["id"] = f"toolgen-llm-{seed}-{report.kept:06d}"
                report.kept += 1
                if progress is not None:
                    progress(report.kept, count)
                yield record
                continue
            if streak >= max_consecutive_failures:
                raise LLMUnavailable(
                    f"the LLM endpoint failed {streak} tasks in a row; last: {outcome.reason}",
                    stage="generate", attempts=streak)
            if report.attempted - report.kept > limit:
                raise GenerationError(f"{report.attempted - report.kept} of {report.attempted} attempts "
                                      f"rejected ({report.rejected})")
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
