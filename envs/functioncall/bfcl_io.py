"""Loading BFCL data files (question + possible answer JSONL, joined by id) as task records.

BFCL ships, per test category, a question file with lines ``{"id", "question", "function"}``
(``question`` is a list of turns, each a list of chat messages; ``function`` the function docs
in BFCL's dialect: ``"type": "dict"`` at the top, ``float``/``tuple``/``any`` types) and a
possible-answer file with lines ``{"id", "ground_truth": [{func: {param: [allowed...]}}]}``.

Each joined pair becomes ``{id, messages, tools, gold_calls, gold_ast}``: tools in the OpenAI
form with BFCL's own type mapping for function-calling models (``GORILLA_TO_OPENAPI``: dict ->
object, float -> number, tuple -> array, any -> string, an untyped property -> string); the
possible answer kept as ``gold_ast`` for the ``bfcl`` verifier; and one concrete gold call per
answer (the first allowed value of each parameter) for the ``looptool`` verifier, which is
therefore stricter on these tasks than BFCL. Use ``verifier: "bfcl"`` with them.

Without an answer file (BFCL's ``irrelevance`` category) every question becomes a
``gold_text`` task: the right response makes no call. Only single-turn questions are read;
dotted function names (``math.factorial``) are kept as they are.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from toolgym.envs.functioncall.records import validate_record
from toolgym.envs.functioncall.verify_bfcl import calls_from_gold_ast
from toolgym.errors import ValidationFailed

__all__ = ["GORILLA_TO_OPENAPI", "bfcl_function_to_tool", "load_bfcl"]

GORILLA_TO_OPENAPI: dict[str, str] = {
    "integer": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "string": "string",
    "char": "string",
    "any": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "dict": "object",
    "object": "object",
}


def _cast_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Map BFCL's type names to JSON-schema ones, through properties and items."""
    kind = schema.get("type")
    schema["type"] = GORILLA_TO_OPENAPI.get(kind, "string") if isinstance(kind, str) else "string"
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for key, sub in properties.items():
            if isinstance(sub, dict):
                properties[key] = _cast_types(sub)
    items = schema.get("items")
    if isinstance(items, dict):
        schema["items"] = _cast_types(items)
    return schema


def bfcl_function_to_tool(function: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL function doc as an OpenAI tool schema."""
    fn = copy.deepcopy(dict(function))
    parameters = fn.get("parameters") or {}
    properties = parameters.get("properties") or {}
    fn["parameters"] = {
        **parameters,
        "type": "object",
        "properties": {k: _cast_types(dict(v)) for k, v in properties.items() if isinstance(v, Mapping)},
    }
    return {"type": "function", "function": fn}


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValidationFailed(f"{path}:{lineno}: not valid JSON ({exc})", line=lineno) from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                raise ValidationFailed(f"{path}:{lineno}: expected an object with a string 'id'", line=lineno)
            yield lineno, obj


def _messages(question: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(question, list) and question and all(isinstance(t, list) for t in question):
        if len(question) != 1:
            raise ValidationFailed(f"{where}: multi-turn questions are not supported", field="question")
        question = question[0]
    if not isinstance(question, list):
        raise ValidationFailed(f"{where}: 'question' must be a list of chat messages", field="question")
    return [dict(m) for m in question]


def load_bfcl(
    question_path: str | Path,
    answer_path: str | Path | None = None,
    *,
    on_error: Literal["raise", "skip"] = "raise",
) -> list[dict[str, Any]]:
    """Records from BFCL's files (module doc), validated, in question-file order.

    A question that does not fit (no answer when ``answer_path`` is given, a multi-turn
    question, a gold that fails validation) raises ``ValidationFailed`` naming the file, line
    and id; with ``on_error="skip"`` it is left out instead (compare the counts).
    """
    answers: dict[str, Any] | None = None
    if answer_path is not None:
        answers = {obj["id"]: obj.get("ground_truth") for _, obj in _read_jsonl(Path(answer_path))}
    records: list[dict[str, Any]] = []
    for lineno, obj in _read_jsonl(Path(question_path)):
        where = f"{question_path}:{lineno} ({obj['id']})"
        try:
            records.append(_record(obj, answers, where))
        except ValidationFailed:
            if on_error == "raise":
                raise
    return records


def _record(obj: Mapping[str, Any], answers: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    qid = obj["id"]
    functions = obj.get("function")
    if not isinstance(functions, list) or not all(isinstance(f, Mapping) for f in functions):
        raise ValidationFailed(f"{where}: 'function' must be a list of function docs", field="function")
    record: dict[str, Any] = {
        "id": qid,
        "messages": _messages(obj.get("question"), where),
        "tools": [bfcl_function_to_tool(f) for f in functions],
    }
    if answers is None:
        record["gold_text"] = True
    else:
        if qid not in answers:
            raise ValidationFailed(f"{where}: no possible answer with this id", id=qid)
        gold_ast = answers[qid]
        if not isinstance(gold_ast, list):
            raise ValidationFailed(f"{where}: 'ground_truth' must be a list", id=qid)
        record["gold_ast"] = gold_ast
        try:
            record["gold_calls"] = calls_from_gold_ast(gold_ast, record["tools"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValidationFailed(
                f"{where}: 'ground_truth' is not BFCL's answer form ({exc})", id=qid
            ) from exc
    try:
        validate_record(record)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{where}: {exc.message}", **{**exc.details, "id": qid}) from exc
    return record
