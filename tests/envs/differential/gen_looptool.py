"""Make ``looptool_cases.json``: random FunctionCall actions scored by the authors' code.

Usage (any Python 3.10+; nothing to install)::

    python tests/envs/differential/gen_looptool.py /path/to/LoopTool-checkout [out.json]

It loads two files of Rednote-ExperienceAI-Lab/LoopTool from the given checkout at run time
(nothing of theirs is copied here):

- ``grpotool/verl/utils/reward_score/toolace.py``: ``compute_score``, their GRPO reward, run
  with the settings of their training script ``grpotool/train_grpo_qwen.sh``
  (``CORRECTMAX1=1``, ``ERRORMAX=0``, ``TOOL_REWARD_VERSION=1``, a Qwen experiment name), so a
  match scores 1 and anything else 0; and ``extract_tool_calls``, what it reads as calls;
- ``dataloop/filter_grpo_sample.py``: ``compare_parsed_content`` (length check, then the
  frozenset comparison), applied to the gold calls and the calls their regex read. Its
  imports of numpy, pandas and openai are stubbed: the function uses none of them.

The actions are generated around a gold: the gold itself in their tag format, reordered,
with duplicates, dropped or extra calls, changed values (``1`` vs ``1.0`` vs ``True``, list
order and repeats, ``{}`` vs ``[]``, case), tags without the newlines, invalid JSON, extra keys,
reasoning before the calls, text after ``<|im_end|>``, and text answers. Two forms where
ToolGym deliberately differs (documented in ``envs/functioncall/README.md``) are not
generated: ``<tool_call>`` text inside the reasoning (we drop reasoning first) and
BFCL-style Python call lists (LoopTool reads tags only).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import os
import random
import sys
import types
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

SEED = 20260413
CASES = 160

STR = {"type": "string"}
TOOLS = [
    {"name": "get_weather", "description": "Weather in a city.", "parameters": {"type": "object", "properties": {
        "city": STR, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}},
    {"name": "roll", "description": "Roll a die.", "parameters": {"type": "object", "properties": {
        "sides": {"type": "integer"}}, "required": ["sides"]}},
    {"name": "add", "description": "Add two numbers.", "parameters": {"type": "object", "properties": {
        "a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
    {"name": "tag_items", "description": "Tag items.", "parameters": {"type": "object", "properties": {
        "items": {"type": "array", "items": STR}, "options": {"type": "object"}}, "required": ["items"]}},
]  # fmt: skip
MESSAGES = [{"role": "system", "content": "Use the tools."}, {"role": "user", "content": "Please help."}]


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_theirs(checkout: Path) -> tuple[Any, Any]:
    for name in ("numpy", "pandas", "openai"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["openai"].OpenAI = object  # type: ignore[attr-defined]  # annotations only
    os.environ.update(
        {"EXPERIMENT_NAME": "qwen-grpo", "CORRECTMAX1": "1", "ERRORMAX": "0", "TOOL_REWARD_VERSION": "1"}
    )
    toolace = _load(checkout / "grpotool/verl/utils/reward_score/toolace.py", "looptool_toolace")
    dataloop = _load(checkout / "dataloop/filter_grpo_sample.py", "looptool_filter_grpo_sample")
    return toolace, dataloop


def _call(rng: random.Random) -> dict[str, Any]:
    name = rng.choice(["get_weather", "get_weather", "roll", "add", "tag_items"])
    if name == "get_weather":
        args: dict[str, Any] = {"city": rng.choice(["Paris", "Lima", "Oslo"])}
        if rng.random() < 0.4:
            args["unit"] = rng.choice(["celsius", "fahrenheit"])
    elif name == "roll":
        args = {"sides": rng.choice([1, 6, 20])}
    elif name == "add":
        args = {"a": rng.choice([0, 1, 2.5]), "b": rng.choice([1, 3])}
    else:
        args = {"items": rng.sample(["a", "b", "c"], rng.randint(0, 3))}
        if rng.random() < 0.5:
            args["options"] = rng.choice([{}, {"x": 1}, {"x": {"y": [1, 2]}}])
    return {"name": name, "arguments": args}


def _mutate_value(rng: random.Random, value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return rng.choice([float(value), value + 1, str(value), True if value == 1 else value])
    if isinstance(value, str):
        return rng.choice([value.lower(), value.upper(), value + " ", value])
    if isinstance(value, list):
        return rng.choice([list(reversed(value)), value + value[:1], value[:-1], {} if not value else value])
    if isinstance(value, dict):
        return rng.choice([dict(reversed(list(value.items()))), [] if not value else {}, {**value, "z": 0}])
    return value


def _mutate(rng: random.Random, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    calls = copy.deepcopy(calls)
    kinds = ["same", "same", "same", "reorder", "reorder", "dup", "drop", "extra", "value", "value", "key", "name"]
    kind = rng.choice([*kinds, "optional"])
    if kind == "reorder":
        rng.shuffle(calls)
    elif kind == "dup" and calls:
        calls.append(copy.deepcopy(rng.choice(calls)))
        if rng.random() < 0.5:
            calls.pop(0)
    elif kind == "drop" and calls:
        calls.pop(rng.randrange(len(calls)))
    elif kind == "extra":
        calls.append(_call(rng))
    elif kind == "value" and calls:
        args = rng.choice(calls)["arguments"]
        key = rng.choice(sorted(args))
        args[key] = _mutate_value(rng, args[key])
    elif kind == "key" and calls:
        call = rng.choice(calls)
        call["arguments"] = dict(reversed(list(call["arguments"].items())))
    elif kind == "name" and calls:
        rng.choice(calls)["name"] = "get_forecast"
    elif kind == "optional" and calls:
        args = rng.choice(calls)["arguments"]
        if "unit" in args:
            del args["unit"]
        else:
            args["unit"] = "celsius"
    return calls


def _tag(rng: random.Random, call: Any, style: str) -> str:
    body = call if isinstance(call, str) else json.dumps(call, ensure_ascii=False)
    if style == "one_line":
        return f"<tool_call>{body}</tool_call>"
    if style == "spaces":
        return f"<tool_call> {body} </tool_call>"
    return f"<tool_call>\n{body}\n</tool_call>"


def _response(rng: random.Random, gold: list[dict[str, Any]] | None) -> str:
    if rng.random() < 0.15:
        return rng.choice(["I cannot help with that.", "It is sunny.", "Here: </tool_call>", "<tool_call>", ""])
    calls: list[Any] = _mutate(rng, gold) if gold and rng.random() < 0.8 else [_call(rng)]
    if rng.random() < 0.08 and calls:
        calls[0] = rng.choice(['{"name": "roll", "arguments": {"sides": 6}', '{"name": "roll", "arguments": "{}"}',
                               '{"name": "roll", "arguments": {}, "id": 1}', "[1, 2]"])  # fmt: skip
    style = "exact" if rng.random() < 0.75 else rng.choice(["one_line", "spaces"])
    mixed = rng.random() < 0.1
    blocks = [_tag(rng, c, rng.choice(["exact", "one_line"]) if mixed else style) for c in calls]
    text = "\n".join(blocks)
    if rng.random() < 0.3:
        text = "<think>\nThe user wants help; I will call the tools.\n</think>\n\n" + text
    if rng.random() < 0.15:
        text = "Let me check.\n" + text
    if rng.random() < 0.1:
        text += "<|im_end|>\n" + _tag(rng, _call(rng), "exact")
    return text


def main(argv: list[str]) -> None:
    """Write the fixture (see the module doc)."""
    if len(argv) < 2:
        raise SystemExit(__doc__)
    toolace, dataloop = _load_theirs(Path(argv[1]).resolve())
    out = Path(argv[2]) if len(argv) > 2 else Path(__file__).with_name("looptool_cases.json")
    rng = random.Random(SEED)
    cases = []
    for i in range(CASES):
        text_gold = rng.random() < 0.15
        gold = None if text_gold else [_call(rng) for _ in range(rng.choice([1, 1, 1, 2, 2, 3]))]
        ground_truth = "I can't do that." if gold is None else "\n".join(_tag(rng, c, "exact") for c in gold)
        action = _response(rng, gold)
        with redirect_stdout(io.StringIO()):
            score = toolace.compute_score("<|im_start|>assistant\n" + action, ground_truth)[0]
            read = toolace.extract_tool_calls(action.split("<|im_end|>")[0].strip())
            match = dataloop.compare_parsed_content(gold, read) if gold is not None else None
        case: dict[str, Any] = {"id": f"lt-{i:03d}"}
        case.update({"gold_text": True} if gold is None else {"gold_calls": gold})
        case.update({"action": action, "expected": {"score": score, "calls_read": read, "dataloop_match": match}})
        cases.append(case)
    meta = {"generator": "tests/envs/differential/gen_looptool.py", "seed": SEED,
            "upstream": "Rednote-ExperienceAI-Lab/LoopTool"}  # fmt: skip
    head = json.dumps({"meta": meta, "messages": MESSAGES, "tools": TOOLS}, ensure_ascii=False)[:-1]
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    out.write_text(f'{head}, "cases": [\n{lines}\n]}}\n', encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main(sys.argv)
