"""The generator: five stages, self-verification, records.

``generate(seed, count)`` yields ``count`` verified ToolUse records. Attempt ``n`` draws
everything (its world, question, tools, code, reference calls) from its own
``random.Random(f"toolgen/{seed}/{n}")``, so output depends on nothing but the seed, the
knobs and the code: the same seed gives byte-identical JSON, and a run of 100 is the
prefix of a run of 1,000. An attempt whose task fails verification or repeats an earlier
question is dropped and counted in the ``GenerationReport``.

``single_step_tasks`` derives FunctionCall records (query, tools, gold calls) from the first
turn of single-hop and parallel single-hop tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from toolgym.taskgen.decompose import NoScenario
from toolgym.taskgen.ftrl import answer_verify, normalize
from toolgym.taskgen.knobs import FUNCTION_CALL_KNOBS, ScalingKnobs
from toolgym.taskgen.model import QUESTION_TYPES, Call, Scenario, Toolset, ToolSpec
from toolgym.taskgen.scaling import reference_option_value
from toolgym.taskgen.splits import assign_split
from toolgym.taskgen.stages import Pipeline
from toolgym.taskgen.verify import check_record, own_code_executor, reason_code
from toolgym.taskgen.world import World

__all__ = [
    "FUNCTION_CALL_SYSTEM_PROMPT",
    "SYSTEM_PROMPT",
    "BuiltTask",
    "GenerationError",
    "GenerationReport",
    "build_task",
    "function_call_record",
    "generate",
    "single_step_tasks",
]

SYSTEM_PROMPT = (
    "You are a helpful assistant that answers questions by calling the tools provided. The facts "
    "you need are only available through the tools, so do not guess. A question may need several "
    "lookups, and a later lookup may need the answer of an earlier one; independent lookups can be "
    "made in parallel. When you know the answer, reply without a tool call and give only the "
    "answer; if the question asks for several things, give them in the order asked, separated by "
    "\", \"."
)
FUNCTION_CALL_SYSTEM_PROMPT = (
    "You are a function-calling assistant. Answer the user's request by calling the right "
    "function or functions with the right arguments, all in this one turn; make independent "
    "calls in parallel."
)

Progress = Callable[[int, int], None]
"""Called as ``progress(kept, count)`` after each kept record."""


class GenerationError(RuntimeError):
    """Too many attempts were rejected (the knobs ask for something the world cannot give)."""


@dataclass
class GenerationReport:
    """How a ``generate`` run went.

    ``rejected`` counts dropped attempts by reason code (see ``verify``), plus
    ``duplicate_question``, ``no_scenario`` and ``ambiguous_gold``.
    """

    attempted: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    """The first full reason seen for each code, to debug a stage."""

    def reject(self, reason: str) -> None:
        """Count one dropped attempt under the code of ``reason``, keeping the first full reason as an example."""
        code = reason_code(reason)
        self.rejected[code] = self.rejected.get(code, 0) + 1
        self.examples.setdefault(code, reason)

    @property
    def rejected_total(self) -> int:
        """All dropped attempts, whatever the reason."""
        return sum(self.rejected.values())


@dataclass(frozen=True)
class BuiltTask:
    """One task before it becomes a record: every stage's output.

    Kept for checks that need more than the record (e.g. the world behind each tool).
    """

    world: World
    scenario: Scenario
    toolset: Toolset
    order: tuple[str, ...]
    """Tool names in the order the policy sees them (shuffled, so distractors hide)."""
    codes: dict[str, str]
    reference: tuple[tuple[Call, ...], ...]
    own_code: bool

    def unsolved_set(self) -> dict[str, list[str]]:
        """FTRL's ``unsolved_set``: per tool, the gold sub-answers its reference calls produce."""
        out: dict[str, list[str]] = {}
        for turn in self.reference:
            for call in turn:
                out.setdefault(call.name, []).append(self.scenario.sub_questions[call.sub_question].answer)
        return out

    def record(self, task_id: str) -> dict[str, Any]:
        """FTRL's record, with the fields this project adds.

        The added fields: ``id``, ``split``, ``question_type``, ``reference_solution`` and
        ``scaling``.
        """
        question = self.scenario.question
        return {
            "id": task_id,
            "split": assign_split(question),
            "question_type": self.scenario.question_type,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": question},
            ],
            "tools": [self.toolset.tool(name).schema() for name in self.order],
            "codes": {name: self.codes[name] for name in self.order},
            "answer": self.scenario.answer,
            "unsolved_set": self.unsolved_set(),
            "solve_rate": 0.0,
            "reference_solution": [
                [{"name": c.name, "arguments": c.arguments} for c in turn] for turn in self.reference
            ],
            "scaling": list(self.toolset.ops),
        }


def plan_reference(scenario: Scenario, toolset: Toolset, rng: random.Random,
                   knobs: ScalingKnobs) -> tuple[tuple[Call, ...], ...]:
    """The reference calls, turn by turn: one call per sub-question, on the tool stage 3/4 assigned it.

    A dependent hop's entity argument is the previous hop's answer.
    """
    turns: list[tuple[Call, ...]] = []
    for turn in scenario.turns:
        calls: list[Call] = []
        for i in turn:
            sq = scenario.sub_questions[i]
            tool = toolset.tool(toolset.assignment[i])
            extra: dict[str, Any] = {}
            if tool.options and rng.random() < knobs.p_optional_in_reference:
                option = rng.choice(tool.options)
                extra[option.name] = reference_option_value(option, rng)
            calls.append(Call(i, tool.name, tool.arguments(sq.entity, sq.attr, extra)))
        turns.append(tuple(calls))
    return tuple(turns)


def build_task(rng: random.Random, knobs: ScalingKnobs, pipeline: Pipeline | None = None) -> BuiltTask:
    """Run the five stages once. Raises ``NoScenario`` when stage 1 finds no question."""
    pipeline = pipeline or Pipeline()
    world = World.build(rng)
    question_type = rng.choices(QUESTION_TYPES, weights=knobs.weights())[0]
    scenario = pipeline.decompose(world, question_type, rng, knobs)
    docs = pipeline.write_documents(scenario, world, rng, knobs)
    toolset = pipeline.integrate(docs, scenario, world, rng, knobs)
    toolset = pipeline.scale(toolset, scenario, world, rng, knobs)
    order = [t.name for t in toolset.tools]
    rng.shuffle(order)
    codes = {name: pipeline.deploy(toolset.tool(name), world, rng) for name in order}
    reference = plan_reference(scenario, toolset, rng, knobs)
    return BuiltTask(world, scenario, toolset, tuple(order), codes, reference, pipeline.writes_own_code)


def _ambiguous_golds(task: BuiltTask) -> list[str]:
    """Golds that more records (or fields) of their tool's table produce than the reference needs.

    A wrong call would then be credited. Checked on the data, not by calling.
    """
    reasons: list[str] = []
    for name, golds in task.unsolved_set().items():
        tool: ToolSpec = task.toolset.tool(name)
        cells = [str(task.world.get(row).attrs[f]) for row in tool.rows for f in tool.fields]
        for gold in dict.fromkeys(golds):
            producers = sum(answer_verify(cell, gold) for cell in cells)
            wanted = sum(normalize(g) == normalize(gold) for g in golds)
            if producers > wanted:
                reasons.append(f"ambiguous_gold: {gold!r} comes out of {producers} cells of {name}")
    return reasons


def verify_built(task: BuiltTask, record: Mapping[str, Any]) -> list[str]:
    """The in-process layer: static checks, data checks, and executing the reference solution and probes.

    Execution happens for this package's own code only.
    """
    reasons = _ambiguous_golds(task)
    if reasons:
        return reasons
    executor = own_code_executor(task.codes) if task.own_code else None
    problems: list[str] = check_record(record, executor)
    return problems


def generate(seed: int, count: int, *, knobs: ScalingKnobs | None = None,
             progress: Progress | None = None, report: GenerationReport | None = None,
             pipeline: Pipeline | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``count`` verified ToolUse records for ``seed`` (ids ``toolgen-<seed>-<n>``).

    ``report`` (optional) is filled with attempt and rejection counts as the run goes.
    Raises ``GenerationError`` when rejections exceed ten times ``count`` plus 100.
    """
    knobs = knobs or ScalingKnobs()
    pipeline = pipeline or Pipeline()
    report = report if report is not None else GenerationReport()
    seen: set[str] = set()
    attempt = 0
    limit = 10 * count + 100
    while report.kept < count:
        if attempt - report.kept > limit:
            raise GenerationError(
                f"{attempt - report.kept} of {attempt} attempts rejected ({report.rejected}); "
                "check the knobs"
            )
        rng = random.Random(f"toolgen/{seed}/{attempt}")
        attempt += 1
        report.attempted += 1
        try:
            task = build_task(rng, knobs, pipeline)
        except NoScenario as exc:
            report.reject(f"no_scenario: {exc}")
            continue
        question = task.scenario.question
        if question in seen:
            report.reject("duplicate_question: the question was already generated")
            continue
        record = task.record(f"toolgen-{seed}-{report.kept:06d}")
        reasons = verify_built(task, record)
        if reasons:
            report.reject(reasons[0])
            continue
        seen.add(question)
        report.kept += 1
        if progress is not None:
            progress(report.kept, count)
        yield record


def single_step_tasks(seed: int, count: int, *, knobs: ScalingKnobs | None = None,
                      progress: Progress | None = None,
                      report: GenerationReport | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``count`` FunctionCall records ``{id, split, messages, tools, gold_calls}``.

    The question and tools of a single-hop or parallel single-hop task, and its first (only)
    reference turn as the gold calls. ``knobs`` default to ``FUNCTION_CALL_KNOBS``.
    """
    knobs = knobs or FUNCTION_CALL_KNOBS
    multi = [qt for qt in ("multi_hop", "parallel_multi_hop") if knobs.question_weights.get(qt, 0) > 0]
    if multi:
        raise ValueError(f"single_step_tasks needs single-turn question types only; got weight on {multi}")
    for record in generate(seed, count, knobs=knobs, progress=progress, report=report):
        yield function_call_record(record)


def function_call_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The FunctionCall record of a single-turn ToolUse record.

    Its question and tools, a function-calling system prompt, and its one reference turn as
    ``gold_calls``.
    """
    if len(record["reference_solution"]) != 1:
        raise ValueError("only a task answered in one turn makes a FunctionCall record")
    return {
        "id": record["id"].replace("toolgen-", "toolgen-fc-", 1),
        "split": record["split"],
        "messages": [
            {"role": "system", "content": FUNCTION_CALL_SYSTEM_PROMPT},
            record["messages"][-1],
        ],
        "tools": record["tools"],
        "gold_calls": record["reference_solution"][0],
    }
