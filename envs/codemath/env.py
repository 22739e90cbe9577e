r"""``toolgym/CodeMath-v0``: math with a Python interpreter over several turns, as SimpleTIR trains it.

See docs/methods.md#simpletir; checked against ltzheng/SimpleTIR
``recipe/simpletir/agent_utils.py``.

One step is one assistant turn:

1. The turn is cut after its first complete code block (``parsing.parse_turn``); the cut text
   is what enters the trajectory.
2. If the cut text has a code block, its code runs alone in the episode's sandbox with
   ``final_answer`` defined (``program.build_program``), as ``python3 main.py``, limits
   ``timeout_s``, 512 MB and 50 processes (SimpleTIR's sandbox).
3. The observation is SimpleTIR's string (``parsing.format_observation``): ``""``,
   ``"\nCode execution result: ...\n"``, or ``"\n"`` for a void turn. On the turn before the
   last allowed one, a non-empty observation gets one more ``"\n"`` (their ``final_prompt``,
   applied at ``step == max_turns - 2`` to every non-empty observation, the void turn's too).
4. The episode ends (``terminated``) when the cut text contains ``\boxed{`` (reason
   ``answered``), when the code printed ``\boxed{`` (``answered``), or on a void turn — no
   code block and no ``\boxed{`` — (``void_turn``; ``info["void_turn"]`` is the flag SimpleTIR
   masks out of the loss). Otherwise it is ``truncated`` at ``max_turns`` (``max_turns``).
5. The reward, 0 until the end, then 1 or 0: the answer in the assistant side of the
   trajectory (cut turns and observations), judged by math-verify against the gold in a
   killable worker process (``verifier``). The answer is read as SimpleTIR's reward reads it
   (``extract``: the last ``boxed``, else "the answer is", "答案是", the last number), or,
   with ``answer_extraction="boxed"``, only from the last complete ``\boxed{}``.

Exactly as SimpleTIR: the observation of the *last allowed turn* is not part of the
trajectory (their loop appends observations only for ``step < max_turns - 1``), so a
``final_answer()`` printed on that turn does not count; ``info["observation_scored"]`` says
so on every step. The observation still comes back, for logs.

The observation reaches the policy as one ``{"role": "user", "content": obs}`` message per
step. SimpleTIR has no chat roles here: it splices the observation tokens straight into the
assistant's sequence (and masks them from the loss). This env speaks chat messages without
tools, where ``tool`` messages need a ``tool_call_id``; ``user`` is the role every chat
template accepts, and the content is the exact string, so a trainer that splices raw text
can reproduce SimpleTIR's sequence byte for byte. Empty observations are sent as empty
messages so the turn structure stays regular.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from toolgym.envs.base import (
    Action,
    EnvFamily,
    Episode,
    Expandable,
    Judgeable,
    JudgeView,
    Observation,
    Runner,
    Step,
    StepStatus,
    Task,
    make_info,
    options_from_mapping,
)
from toolgym.envs.codemath import tasks
from toolgym.envs.codemath.parsing import (
    BOXED,
    RenderedOutput,
    find_last_boxed,
    format_observation,
    parse_turn,
    turn_text,
)
from toolgym.envs.codemath.program import build_program, run_timeout_s
from toolgym.envs.codemath.verifier import Verdict, VerifierPool, default_pool
from toolgym.envs.runner import RunLimits, RunRequest, RunResult
from toolgym.errors import EpisodeFinished, ValidationFailed

__all__ = [
    "MEMORY_BYTES",
    "PROCESS_LIMIT",
    "CodeMathEpisode",
    "CodeMathFamily",
    "CodeMathOptions",
    "system_prompt",
]

MEMORY_BYTES = 512 * 1024 * 1024
"""SimpleTIR's sandbox memory cap (``rlimit as 512M``)."""
PROCESS_LIMIT = 50
"""SimpleTIR's ``rlimit nproc 50``: the run's process and everything it starts, at once."""
TRAIN_MAX_TURNS = 5
EVAL_MAX_TURNS = 10
AnswerExtraction = Literal["simpletir", "boxed"]
EXTRACTED_ANSWER_CHARS = 200
"""``info["extracted_answer"]`` is cut to this length ("the answer is" can take a whole tail)."""


@dataclass(frozen=True)
class CodeMathOptions:
    """Reset options of ``toolgym/CodeMath-v0``."""

    max_turns: int = field(
        default=EVAL_MAX_TURNS,
        metadata={
            "doc": "Assistant turns before the episode is truncated; defaults to 5 on the train "
            "split and 10 otherwise (SimpleTIR's training and evaluation settings).",
            "min": 1,
            "max": 100,
        },
    )
    stateful: bool = field(
        default=False,
        metadata={
            "doc": "Notebook mode: earlier clean code blocks are re-run silently before each new "
            "one, so their variables persist. Off by default: SimpleTIR runs every block alone.",
        },
    )
    timeout_s: float = field(
        default=3.0,
        metadata={
            "doc": "Run-time limit of one code block in seconds (SimpleTIR: 3).",
            "min": 0.1,
            "max": 60.0,
        },
    )
    answer_extraction: AnswerExtraction = field(
        default="simpletir",
        metadata={
            "doc": "How the reward finds the answer in the trajectory. simpletir (default): as "
            "SimpleTIR's reward does, the last \\boxed{...}, else the text after 'the answer is' or "
            "'答案是', else the last number, normalized by the Qwen math toolkit's strip_string; "
            "boxed: only the last complete \\boxed{...}, no answer otherwise.",
        },
    )


def system_prompt(options: CodeMathOptions) -> str:
    """The protocol, told to the policy at reset.

    SimpleTIR's own prompt, in its trainer config, says the same things; ours is shorter and
    names the turn rules.
    """
    state = (
        "Variables, functions and imports from your earlier blocks that ran without errors are kept."
        if options.stateful
        else "Each block is a fresh program: nothing is kept from earlier blocks, so include the imports "
        "and definitions it needs."
    )
    return (
        "Solve the problem step by step. You can run Python: write a complete program in one fenced "
        "block (```python ... ```) and use print() to see results; only the first block of a reply runs, "
        'and its output comes back after "Code execution result:". '
        f"{state} "
        "Give your final answer as \\boxed{answer} in your reply, or call final_answer(answer) in code, "
        "which prints \\boxed{answer}; either ends the episode. A reply with neither a code block nor "
        "\\boxed{} also ends it."
    )


class CodeMathFamily(EnvFamily, Judgeable, Expandable):
    """The CodeMath env family (module doc). ``verifier`` defaults to the process-wide pool."""

    env_id: ClassVar[str] = "toolgym/CodeMath-v0"
    description: ClassVar[str] = (
        "Math with a Python interpreter over several turns, SimpleTIR's environment: each reply's "
        "first code block runs in a sandbox and its output is the next observation; the episode "
        "ends at \\boxed{}, at a void turn (no code, no answer), or at max_turns."
    )
    action_format: ClassVar[str] = (
        "The assistant turn as text (or an assistant message's content): text cut after its first "
        "```python``` block; that block runs; \\boxed{...} answers."
    )
    observation_format: ClassVar[str] = (
        "Reset: a system message (the protocol) and the question as a user message. Step: one user "
        "message whose content is SimpleTIR's observation string: '' (nothing printed), "
        "'\\nCode execution result: <stdout or last stderr line, middle-truncated to 512 chars>\\n', "
        "or '\\n' for a void turn; one more '\\n' on the turn before the last allowed one."
    )
    reward_spec: ClassVar[str] = (
        "Binary, at the end of the episode: 1 if the answer in the assistant side of the trajectory "
        "(turns and scored observations) equals the gold for math-verify, else 0. The answer is read "
        "as SimpleTIR's reward reads it (last \\boxed{...}, else 'the answer is' / '答案是', else the "
        "last number), or only from the last \\boxed{...} with answer_extraction=boxed. "
        "reward_components: {correct}."
    )
    record_format: ClassVar[str] = (
        '{"question": str, "answer": str (the gold, math-verify parsable)}; optional "id", "source"'
    )
    options_type: ClassVar[type] = CodeMathOptions
    needs_sandbox: ClassVar[bool] = True

    def __init__(self, verifier: VerifierPool | None = None) -> None:
        self._verifier = verifier

    @property
    def verifier(self) -> VerifierPool:
        """The math-verify pool: the one given, else the process's default pool on first use.

        Resolved lazily so that a family which never scores starts no worker process.
        """
        if self._verifier is None:
            self._verifier = default_pool()
        return self._verifier

    def validate_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Shape check, then the gold must parse with math-verify (else no answer could ever score).

        A failure is a ``ValidationFailed`` naming ``answer``.
        """
        out = tasks.normalize_record(record)
        verdict = self.verifier.check_gold(out["answer"])
        if not verdict.correct:
            why = "timed out" if verdict.status == "timeout" else "found no math in it"
            raise ValidationFailed(
                f"record field 'answer': math-verify {why} ({out['answer'][:80]!r})", field="answer"
            )
        return out

    def task_metadata(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record's ``source`` and reasoning-gym ``family`` when known; never the answer."""
        meta: dict[str, Any] = {}
        if isinstance(record.get("source"), str):
            meta["source"] = record["source"]
        family = tasks.family_of(record)
        if family is not None:
            meta["family"] = family
        return meta

    def builtin_records(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """The shipped tasks (``tasks.builtin_records``)."""
        return tasks.builtin_records()

    def variants(self, record: Mapping[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
        """New tasks from the same reasoning-gym generator (``tasks.variants``)."""
        return tasks.variants(record, n, rng)

    def gold_answer(self, record: Mapping[str, Any]) -> Action:
        r"""The gold as the policy is asked to give it: ``\boxed{answer}``."""
        return f"\\boxed{{{record['answer']}}}"

    def grade(self, task: Task, action: Action) -> bool:
        r"""The reward rule on one final turn: its last ``\boxed{}`` equals the gold for math-verify.

        The check runs in a worker process and blocks up to the verifier's timeout.
        """
        verdict = self.verifier.verify(str(task.record["answer"]), find_last_boxed(turn_text(action)))
        return bool(verdict.correct)

    def judge_view(self, task: Task, response: Action) -> JudgeView:
        """The question, no tools, the boxed gold and the answer's text."""
        question = {"role": "user", "content": str(task.record["question"])}
        return JudgeView(messages=[question], tools=[], label=str(self.gold_answer(task.record)),
                         response=turn_text(response))

    def parse_options(self, raw: Mapping[str, Any], split: str) -> CodeMathOptions:
        """Options for ``split``: ``max_turns`` defaults to 5 on ``train`` and 10 elsewhere (SimpleTIR's settings)."""
        default_turns = TRAIN_MAX_TURNS if split == "train" else EVAL_MAX_TURNS
        options: CodeMathOptions = options_from_mapping(CodeMathOptions, raw, max_turns=default_turns)
        return options

    def start(self, task: Task, options: Any, runner: Runner | None, rng: random.Random) -> CodeMathEpisode:
        """A new episode on ``task``; raises ``ValueError`` without a runner (the code must run in a sandbox)."""
        if runner is None:
            raise ValueError("CodeMath needs a sandbox runner")
        if not isinstance(options, CodeMathOptions):
            raise TypeError("options must come from CodeMathFamily.parse_options")
        return CodeMathEpisode(
            question=str(task.record["question"]),
            gold=str(task.record["answer"]),
            options=options,
            runner=runner,
            verifier=self.verifier,
        )


class CodeMathEpisode(Episode):
    """One CodeMath rollout (module doc). Deterministic given the actions and run results."""

    def __init__(
        self,
        *,
        question: str,
        gold: str,
        options: CodeMathOptions,
        runner: Runner,
        verifier: VerifierPool,
    ) -> None:
        self.question = question
        self.options = options
        self._gold = gold
        self._runner = runner
        self._verifier = verifier
        self._turn = 0
        self._scored: list[str] = []
        """The assistant side of the trajectory, as SimpleTIR's reward reads it."""
        self._cells: list[str] = []
        """Stateful mode: the code of earlier blocks that ran cleanly."""
        self._counts = {"use_code": 0, "valid_code": 0, "timeouts": 0}
        self._reason: str | None = None

    @property
    def turn(self) -> int:
        """Assistant turns taken so far."""
        return self._turn

    @property
    def finished(self) -> bool:
        """Whether the episode has ended (an answer, a void turn, or ``max_turns``)."""
        return self._reason is not None

    def reset(self) -> tuple[Observation, dict[str, Any]]:
        """The system prompt (the turn protocol) and the question."""
        messages = [
            {"role": "system", "content": system_prompt(self.options)},
            {"role": "user", "content": self.question},
        ]
        return Observation(messages=messages), make_info(metrics=self._metrics(), void_turn=False)

    def step(self, action: Action) -> Step:
        """One assistant turn, steps 1 to 5 of the module doc.

        Raises ``EpisodeFinished`` after the end. The sandbox and the verifier run before any state
        changes, so a ``SandboxError`` leaves the episode as it was.
        """
        if self._reason is not None:
            raise EpisodeFinished("", self._reason)
        turn = parse_turn(action)
        last = self._turn == self.options.max_turns - 1

        # Everything that can fail (the sandbox, the verifier) happens before state changes,
        # so a raised SandboxError leaves the episode as it was.
        result: RunResult | None = None
        cells = self._cells if self.options.stateful else []
        if turn.code is not None:
            timeout_s = run_timeout_s(self.options.timeout_s, cells)
            limits = RunLimits(timeout_s=timeout_s, memory_bytes=MEMORY_BYTES, max_processes=PROCESS_LIMIT)
            request = RunRequest(code=build_program(turn.code, cells), limits=limits)
            result = self._runner(request)

        status: StepStatus = "ok"
        output_truncated = False
        answered = turn.answered
        rendered: RenderedOutput | None = None
        if result is not None:
            rendered = format_observation(result)
            observation, output_truncated = rendered.observation, rendered.truncated
            if result.status == "timeout":
                status = "timeout"
            elif BOXED in result.stdout:
                answered = True
        elif turn.answered:
            observation = ""
        else:
            observation, status = "\n", "invalid_action"
        if self._turn == self.options.max_turns - 2 and observation:
            observation += "\n"  # SimpleTIR's final_prompt

        scored = [*self._scored, turn.text] + ([] if last else [observation])
        reason = "answered" if answered else "void_turn" if turn.void else "max_turns" if last else None
        verdict: Verdict | None = None
        if reason is not None and self.options.answer_extraction == "boxed":
            verdict = self._verifier.verify(self._gold, find_last_boxed("".join(scored)))
        elif reason is not None:
            verdict = self._verifier.verify_solution(self._gold, "".join(scored))

        # Commit.
        self._turn += 1
        self._scored = scored
        if result is not None and rendered is not None:
            self._counts["use_code"] += 1
            self._counts["valid_code"] += int(rendered.valid)
            self._counts["timeouts"] += int(result.status == "timeout")
            if rendered.valid and result.status == "ok" and self.options.stateful:
                self._cells = [*self._cells, turn.code or ""]
        self._reason = reason

        extra: dict[str, Any] = {"void_turn": turn.void, "observation_scored": not last}
        if result is not None:
            extra["run_status"] = result.status
        reward = 0.0
        components: dict[str, float] = {}
        if verdict is not None:
            reward = 1.0 if verdict.correct else 0.0
            components = {"correct": reward}
            extra["verifier_status"] = verdict.status
            if verdict.answer is not None:
                extra["extracted_answer"] = verdict.answer[:EXTRACTED_ANSWER_CHARS]
            if verdict.status == "timeout":
                status = "timeout"
        info = make_info(
            status=status,
            reward_components=components,
            metrics=self._metrics(),
            reason=reason,
            output_truncated=output_truncated,
            **extra,
        )
        return Step(
            observation=Observation(messages=[{"role": "user", "content": observation}]),
            reward=reward,
            terminated=reason in ("answered", "void_turn"),
            truncated=reason == "max_turns",
            info=info,
        )

    def _metrics(self) -> dict[str, float]:
        return {"turns": float(self._turn), **{k: float(v) for k, v in self._counts.items()}}
