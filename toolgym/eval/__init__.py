"""Evaluating a policy on a split of the ToolUse env through the HTTP API: what ``toolgym eval`` runs.

One module per concept:

- ``tasks``: what to evaluate (a task file's records registered where missing, the split
  chosen, a seed per task so that episodes do not depend on order or concurrency);
- ``policies``: what a policy sees (``Conversation``) and the two that need no model,
  ``ReferencePolicy`` (the task's reference solution, then its gold answer: the ceiling)
  and ``RandomPolicy`` (random calls or nonsense, seeded per task: the floor);
- ``model``: ``ModelPolicy``, any OpenAI-compatible chat endpoint (through ``toolgym.chat``);
- ``runner``: one episode per task at bounded concurrency (``evaluate``), an episode the
  server or the endpoint could not serve kept apart as an error, never scored 0;
- ``report``: FTRL's Solve-P/R/F1 per question type and overall, with the mean return.

```python
from toolgym.client import AsyncEnvClient
from toolgym.eval import RandomPolicy, evaluate, format_table, select_tasks, summarize

async with AsyncEnvClient("http://127.0.0.1:8000") as client:
    tasks = await select_tasks(client, "toolgym/ToolUse-v0", "test")
    results = await evaluate(client, "toolgym/ToolUse-v0", tasks, RandomPolicy(), concurrency=8)
print(format_table(summarize(results)))
```
"""

from __future__ import annotations

from toolgym.eval.model import ModelEndpointError, ModelPolicy
from toolgym.eval.policies import Conversation, Policy, RandomPolicy, ReferencePolicy
from toolgym.eval.report import METRICS, QUESTION_TYPES, Row, format_table, summarize
from toolgym.eval.runner import EpisodeResult, evaluate, run_episode
from toolgym.eval.tasks import EvalTask, list_tasks, load_task_file, record_id, register_tasks, select_tasks, task_seed

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
    "record_id",
    "register_tasks",
    "run_episode",
    "select_tasks",
    "summarize",
    "task_seed",
]
