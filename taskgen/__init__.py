"""The task generator: it builds tool environments for the ToolUse and FunctionCall families.

It is not an env family (it serves no episodes); it makes the task records that families load.

A deterministic, offline re-creation of FTRL's five-stage construction pipeline
(docs/methods.md#ftrl), with procedural stages instead of LLM calls:

1. ``decompose``: a question of one of four types and its sub-questions with gold answers;
2. ``write_documents``: one OpenAI tool document per sub-question;
3. ``integrate``: overlapping tools merged;
4. ``scale``: functional generalization, parameter expansion, parameter-type
   generalization, toolset extension, each fired by a ``ScalingKnobs`` probability;
5. ``deploy``: self-contained Python source per tool, its slice of the world embedded.

Every task is verified before it is kept (``verify``); ``generate`` yields FTRL records,
``single_step_tasks`` FunctionCall records, ``stats`` prints what was made. Each stage is a
protocol (``stages``), so an LLM may later replace any one of them.
"""

from toolgym.taskgen.ftrl import answer_verify
from toolgym.taskgen.generator import (
    FUNCTION_CALL_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    BuiltTask,
    GenerationError,
    GenerationReport,
    build_task,
    generate,
    single_step_tasks,
)
from toolgym.taskgen.knobs import FUNCTION_CALL_KNOBS, ScalingKnobs
from toolgym.taskgen.model import QUESTION_TYPES, SCALING_OPS
from toolgym.taskgen.splits import assign_split
from toolgym.taskgen.stages import (
    Decomposer,
    Deployer,
    DocumentWriter,
    Integrator,
    Pipeline,
    Scaler,
)
from toolgym.taskgen.stats import Stats, stats
from toolgym.taskgen.verify import (
    Outcome,
    Rejection,
    SandboxReport,
    check_record,
    own_code_executor,
    verify_in_sandbox,
)

__all__ = [
    "FUNCTION_CALL_KNOBS",
    "FUNCTION_CALL_SYSTEM_PROMPT",
    "QUESTION_TYPES",
    "SCALING_OPS",
    "SYSTEM_PROMPT",
    "BuiltTask",
    "Decomposer",
    "Deployer",
    "DocumentWriter",
    "GenerationError",
    "GenerationReport",
    "Integrator",
    "Outcome",
    "Pipeline",
    "Rejection",
    "SandboxReport",
    "Scaler",
    "ScalingKnobs",
    "Stats",
    "answer_verify",
    "assign_split",
    "build_task",
    "check_record",
    "generate",
    "own_code_executor",
    "single_step_tasks",
    "stats",
    "verify_in_sandbox",
]
