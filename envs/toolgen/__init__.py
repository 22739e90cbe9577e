"""The tool-environment generator shared by the ToolUse and FunctionCall env families.

A deterministic, offline re-creation of FTRL's five-stage construction pipeline
(PAPERS.md §1), with procedural stages instead of LLM calls:

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

from toolgym.envs.toolgen.ftrl import answer_verify
from toolgym.envs.toolgen.generator import (
    FUNCTION_CALL_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    BuiltTask,
    GenerationError,
    GenerationReport,
    build_task,
    generate,
    single_step_tasks,
)
from toolgym.envs.toolgen.knobs import FUNCTION_CALL_KNOBS, ScalingKnobs
from toolgym.envs.toolgen.model import QUESTION_TYPES, SCALING_OPS
from toolgym.envs.toolgen.splits import assign_split
from toolgym.envs.toolgen.stages import (
    Decomposer,
    Deployer,
    DocumentWriter,
    Integrator,
    Pipeline,
    Scaler,
)
from toolgym.envs.toolgen.stats import Stats, stats
from toolgym.envs.toolgen.verify import (
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
