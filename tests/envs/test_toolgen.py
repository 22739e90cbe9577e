"""The generator end to end: determinism, records, verification, splits, FunctionCall tasks.

FTRL semantics cited from docs/methods.md#ftrl (bytedance/FTRL ``Code/utils/utils.py``):
``answer_verify`` splits the gold on ", ", lower-cases and drops commas, and wants every
piece inside the lower-cased comma-free output; a tool's code is ``exec``'d inside a
function and the tool is then called with ``**arguments``.
"""

from __future__ import annotations

import builtins
import copy
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

import toolgym.taskgen as toolgen
from toolgym.envs.base import SPLITS
from toolgym.envs.runner import RunRequest, RunResult
from toolgym.errors import SandboxError
from toolgym.taskgen import (
    FUNCTION_CALL_KNOBS,
    QUESTION_TYPES,
    SCALING_OPS,
    GenerationReport,
    Pipeline,
    ScalingKnobs,
    answer_verify,
    assign_split,
    check_record,
    generate,
    own_code_executor,
    single_step_tasks,
    stats,
    verify_in_sandbox,
)
from toolgym.taskgen.deploy import deploy
from toolgym.taskgen.ftrl import format_result, normalize
from toolgym.taskgen.schema import JSON_TYPES, check_arguments, check_tool_schema
from toolgym.taskgen.verify import CANARY, reason_code

N = 600


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return list(generate(0, N))


def _calls(record: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    for t, turn in enumerate(record["reference_solution"]):
        for call in turn:
            yield t, call


def _owned_golds(record: dict[str, Any]) -> list[list[str]]:
    """The gold each reference call must produce: the j-th call to T owns unsolved_set[T][j]."""
    seen: Counter[str] = Counter()
    out = []
    for turn in record["reference_solution"]:
        row = []
        for call in turn:
            row.append(record["unsolved_set"][call["name"]][seen[call["name"]]])
            seen[call["name"]] += 1
        out.append(row)
    return out


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)


def ftrl_call(name: str, arguments: dict[str, Any], code: str) -> str:
    """FTRL's ``call_function`` semantics: the code is exec'd with separate globals and
    locals (as ``exec`` inside a function does), so the tool cannot see module-level names
    of its own code; the result is formatted by their rule."""
    local_names: dict[str, Any] = {}
    exec(code, {"__builtins__": builtins}, local_names)
    return format_result(local_names[name](**arguments))


# --- determinism -----------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_json() -> None:
    first = [json.dumps(r, sort_keys=False) for r in generate(11, 150)]
    second = [json.dumps(r, sort_keys=False) for r in generate(11, 150)]
    assert len(first) == 150
    for a, b in zip(first, second, strict=True):
        assert a == b


def test_a_short_run_is_the_prefix_of_a_longer_one() -> None:
    short = [json.dumps(r) for r in generate(11, 40)]
    long = [json.dumps(r) for r in generate(11, 120)]
    assert long[:40] == short


def test_different_seeds_give_different_tasks() -> None:
    a = list(generate(1, 100))
    b = list(generate(2, 100))
    assert not {json.dumps(r) for r in a} & {json.dumps(r) for r in b}
    shared = {r["messages"][-1]["content"] for r in a} & {r["messages"][-1]["content"] for r in b}
    assert len(shared) <= 2


# --- the record ------------------------------------------------------------------------------

def test_records_have_ftrls_format(records: list[dict[str, Any]]) -> None:
    assert len({r["id"] for r in records}) == len(records) == N
    for r in records:
        assert list(r) == ["id", "split", "question_type", "messages", "tools", "codes", "answer",
                           "unsolved_set", "solve_rate", "reference_solution", "scaling"]
        assert [m["role"] for m in r["messages"]] == ["system", "user"]
        assert r["question_type"] in QUESTION_TYPES and r["split"] in SPLITS
        assert r["solve_rate"] == 0
        names = [t["function"]["name"] for t in r["tools"]]
        assert list(r["codes"]) == names and len(set(names)) == len(names)
        assert set(r["unsolved_set"]) <= set(names)
        for name, code in r["codes"].items():
            assert code.startswith(f"def {name}(")
            body = code.splitlines()[1:]
            assert all(not line or line.startswith("    ") for line in body), "everything inside the def"
        assert set(r["scaling"]) <= set(SCALING_OPS)
        golds = [g for row in _owned_golds(r) for g in row]
        assert sorted(golds) == sorted(g for v in r["unsolved_set"].values() for g in v)
        assert all(part in golds for part in r["answer"].split(", ")), "the answer is made of sub-answers"


def test_schemas_are_valid_and_reference_calls_satisfy_them(records: list[dict[str, Any]]) -> None:
    for r in records:
        schemas = {}
        for tool in r["tools"]:
            assert check_tool_schema(tool) == []
            fn = tool["function"]
            params = fn["parameters"]
            assert params["type"] == "object"
            assert set(params["required"]) <= set(params["properties"])
            for prop in params["properties"].values():
                assert prop["type"] in JSON_TYPES and prop["description"]
                if prop["type"] == "array":
                    assert prop["items"]["type"] in JSON_TYPES
                if prop["type"] == "object":
                    assert set(prop["required"]) <= set(prop["properties"])
            schemas[fn["name"]] = params
        for _, call in _calls(r):
            params = schemas[call["name"]]
            assert check_arguments(params, call["arguments"]) == []
            assert set(params["required"]) <= set(call["arguments"])


def test_every_reference_solution_verifies_in_process(records: list[dict[str, Any]]) -> None:
    for r in records:
        assert check_record(r, own_code_executor(r["codes"])) == [], r["id"]


def test_reference_solutions_work_under_ftrls_exec_semantics(records: list[dict[str, Any]]) -> None:
    for r in records[:200]:
        outputs = []
        for (_, call), gold in zip(_calls(r), [g for row in _owned_golds(r) for g in row], strict=True):
            output = ftrl_call(call["name"], copy.deepcopy(call["arguments"]), r["codes"][call["name"]])
            assert answer_verify(output, gold), (r["id"], call, output, gold)
            outputs.append((call["name"], output))
        # FTRL's bookkeeping: each call removes the first unsolved gold of its tool it verifies.
        left = {k: list(v) for k, v in r["unsolved_set"].items()}
        for name, output in outputs:
            for gold in left[name]:
                if answer_verify(output, gold):
                    left[name].remove(gold)
                    break
        assert not any(left.values())


def test_multi_hop_calls_take_the_previous_answer(records: list[dict[str, Any]]) -> None:
    multi = [r for r in records if r["question_type"] in ("multi_hop", "parallel_multi_hop")]
    assert len(multi) > N // 5
    for r in multi:
        turns = r["reference_solution"]
        owned = _owned_golds(r)
        assert len(turns) >= 2
        execute = own_code_executor(r["codes"])
        for t in range(1, len(turns)):
            previous = {}
            for call, gold in zip(turns[t - 1], owned[t - 1], strict=True):
                output = execute(call["name"], copy.deepcopy(call["arguments"])).text
                assert answer_verify(output, gold)
                previous[gold] = output
            for call, gold in zip(turns[t], owned[t], strict=True):
                used = [leaf for leaf in _leaves(call["arguments"]) if leaf in previous]
                assert used, f"{r['id']}: {call} takes nothing from turn {t}"
                # Without the previous answer the hop cannot be done: another name fails.
                text = json.dumps(call["arguments"]).replace(json.dumps(used[0]), json.dumps(CANARY))
                broken = json.loads(text)
                outcome = execute(call["name"], broken)
                assert not outcome.ok or not answer_verify(outcome.text, gold)


def test_tools_do_not_echo_arguments(records: list[dict[str, Any]]) -> None:
    for r in records:
        execute = own_code_executor(r["codes"])
        for _, call in _calls(r):
            output = normalize(execute(call["name"], copy.deepcopy(call["arguments"])).text)
            for leaf in _leaves(call["arguments"]):
                assert len(leaf) < 3 or normalize(leaf) not in output, (r["id"], call, leaf)
        # A guessed sub-answer passed as an argument, or as an unknown keyword, never comes back.
        golds = [g for v in r["unsolved_set"].values() for g in v]
        for tool in r["tools"]:
            name = tool["function"]["name"]
            params = tool["function"]["parameters"]
            free = [p for p, s in params["properties"].items() if s["type"] == "string" and "enum" not in s]
            for gold in golds[:2]:
                for p in free:
                    outcome = execute(name, {p: gold})
                    assert normalize(gold) not in normalize(outcome.text), (name, gold, outcome)
                outcome = execute(name, {gold: 1})
                assert not outcome.ok and normalize(gold) not in normalize(outcome.text)


# --- proportions -----------------------------------------------------------------------------

def test_question_types_and_scaling_ops_appear_in_plausible_shares(records: list[dict[str, Any]]) -> None:
    types = Counter(r["question_type"] for r in records)
    for qt in QUESTION_TYPES:
        assert 0.17 < types[qt] / N < 0.33, types
    ops = Counter(op for r in records for op in r["scaling"])
    knobs = ScalingKnobs()
    expected = {
        "functional_generalization": knobs.p_functional_generalization,
        "parameter_expansion": knobs.p_parameter_expansion,
        "type_generalization": knobs.p_type_generalization,
        "toolset_extension": knobs.p_toolset_extension,
    }
    for op, p in expected.items():
        assert abs(ops[op] / N - p) < 0.1, (op, ops[op] / N, p)
    assert any(not r["scaling"] for r in records)
    # Every type meets every operation.
    pairs = Counter((r["question_type"], op) for r in records for op in r["scaling"])
    assert all(pairs[(qt, op)] > 0 for qt in QUESTION_TYPES for op in SCALING_OPS)


def test_knobs_switch_operations_on_and_off() -> None:
    off = ScalingKnobs(p_functional_generalization=0, p_parameter_expansion=0, p_type_generalization=0,
                       p_toolset_extension=0)
    assert all(r["scaling"] == [] for r in generate(4, 60, knobs=off))
    on = ScalingKnobs(p_functional_generalization=1, p_parameter_expansion=1, p_type_generalization=1,
                      p_toolset_extension=1)
    full = [r for r in generate(4, 60, knobs=on) if r["scaling"] == list(SCALING_OPS)]
    assert len(full) >= 55
    only_multi = ScalingKnobs(question_weights={"multi_hop": 1.0})
    assert {r["question_type"] for r in generate(4, 30, knobs=only_multi)} == {"multi_hop"}
    with pytest.raises(ValueError, match="probability"):
        ScalingKnobs(p_toolset_extension=1.5)
    with pytest.raises(ValueError, match="unknown question type"):
        ScalingKnobs(question_weights={"triple_hop": 1.0})


# --- splits ----------------------------------------------------------------------------------

def test_splits_are_a_function_of_the_question(records: list[dict[str, Any]]) -> None:
    by_question: dict[str, set[str]] = {}
    for r in records:
        question = r["messages"][-1]["content"]
        assert r["split"] == assign_split(question)
        by_question.setdefault(question, set()).add(r["split"])
    assert all(len(s) == 1 for s in by_question.values())
    shares = Counter(r["split"] for r in records)
    assert set(shares) == set(SPLITS)
    assert 0.7 < shares["train"] / N < 0.9
    question = "What is the population of Tarsk?"
    assert assign_split(question) == assign_split(question)


# --- stats, report, FunctionCall -------------------------------------------------------------

def test_stats_table_counts_types_by_operation(records: list[dict[str, Any]]) -> None:
    table = stats(records)
    assert table.total == N
    assert sum(table.counts[qt]["tasks"] for qt in QUESTION_TYPES) == N
    for qt in QUESTION_TYPES:
        row = table.counts[qt]
        assert row["none"] == sum(1 for r in records if r["question_type"] == qt and not r["scaling"])
    text = str(table)
    assert all(word in text for word in (*QUESTION_TYPES, *SCALING_OPS, "total"))


def test_report_counts_attempts_and_rejections() -> None:
    report = GenerationReport()
    seen: list[tuple[int, int]] = []
    kept = list(generate(5, 200, report=report, progress=lambda k, n: seen.append((k, n))))
    assert report.kept == len(kept) == 200
    assert report.attempted == report.kept + report.rejected_total
    assert seen[-1] == (200, 200) and len(seen) == 200
    assert all(code in report.examples for code in report.rejected)


def test_single_step_tasks_are_first_turns_of_single_turn_questions() -> None:
    fc = list(single_step_tasks(6, 120))
    full = {r["id"]: r for r in generate(6, 120, knobs=FUNCTION_CALL_KNOBS)}
    assert len(fc) == 120
    for task in fc:
        assert list(task) == ["id", "split", "messages", "tools", "gold_calls"]
        source = full[task["id"].replace("toolgen-fc-", "toolgen-")]
        assert source["question_type"] in ("single_hop", "parallel_single_hop")
        assert task["gold_calls"] == source["reference_solution"][0]
        assert task["messages"][-1] == source["messages"][-1]
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in task["tools"]}
        execute = own_code_executor(source["codes"])
        outputs = []
        for call in task["gold_calls"]:
            params = schemas[call["name"]]
            assert check_arguments(params, call["arguments"]) == []
            assert set(call["arguments"]) == set(params["required"]), "gold calls carry no optional argument"
            assert not any(isinstance(v, list) and "enum" not in params["properties"][k]["items"]
                           for k, v in call["arguments"].items()), "no batch lists in gold calls"
            outputs.append(execute(call["name"], copy.deepcopy(call["arguments"])).text)
        for part in source["answer"].split(", "):
            assert any(answer_verify(o, part) for o in outputs)
    with pytest.raises(ValueError, match="single-turn"):
        next(single_step_tasks(6, 1, knobs=ScalingKnobs()))


# --- verification catches broken tasks -------------------------------------------------------

def _pick(records: list[dict[str, Any]], question_type: str) -> dict[str, Any]:
    return copy.deepcopy(next(r for r in records if r["question_type"] == question_type))


def _reasons(record: dict[str, Any]) -> set[str]:
    return {reason_code(x) for x in check_record(record, own_code_executor(record["codes"]))}


def test_verification_rejects_tampered_records(records: list[dict[str, Any]]) -> None:
    r = _pick(records, "multi_hop")
    first = r["reference_solution"][0][0]["name"]

    wrong_gold = _pick(records, "single_hop")
    wrong_gold["unsolved_set"][wrong_gold["reference_solution"][0][0]["name"]][0] = "Nobody Atall"
    assert "gold_not_produced" in _reasons(wrong_gold)

    wrong_answer = copy.deepcopy(r)
    wrong_answer["answer"] = "1234567"
    assert "final_answer_mismatch" in _reasons(wrong_answer)

    echo = copy.deepcopy(r)
    echo["codes"][first] = f"def {first}(**kwargs):\n    return {{'you asked': kwargs}}\n"
    assert {"echoes_argument", "canary_echo"} & _reasons(echo)

    broken_hop = copy.deepcopy(r)
    call = broken_hop["reference_solution"][1][0]
    key = next(k for k, v in call["arguments"].items() if isinstance(v, str | list | dict))
    call["arguments"][key] = json.loads(json.dumps(call["arguments"][key]).replace(
        json.dumps(next(_leaves(call["arguments"][key]))), json.dumps("Someone Else")))
    assert "dependency_broken" in _reasons(broken_hop)

    bad_schema = copy.deepcopy(r)
    bad_schema["tools"][0]["function"]["parameters"]["required"].append("ghost")
    assert "schema_invalid" in _reasons(bad_schema)

    bad_args = copy.deepcopy(r)
    bad_args["reference_solution"][0][0]["arguments"]["unknown_arg"] = 1
    assert "arguments_invalid" in _reasons(bad_args)

    raising = copy.deepcopy(r)
    raising["codes"][first] = f"def {first}(**kwargs):\n    raise RuntimeError('down')\n"
    assert "reference_call_error" in _reasons(raising)

    leaked = copy.deepcopy(r)
    leaked["messages"][-1]["content"] += " (hint: " + r["answer"] + ")"
    assert "answer_in_question" in _reasons(leaked)

    as_strings = copy.deepcopy(r)
    for field in ("tools", "codes", "unsolved_set"):
        as_strings[field] = json.dumps(as_strings[field])
    assert check_record(as_strings, own_code_executor(r["codes"])) == [], "the paper's string fields work"


# --- the sandbox layer -----------------------------------------------------------------------

_DRIVER = r"""
import json, sys
req = json.loads(sys.stdin.read())
ns = {}
try:
    exec(compile(req["code"], "<tool>", "exec"), ns)
    value = ns[req["function"]](**req["arguments"])
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    print(json.dumps({"status": "ok", "value": text}))
except Exception as exc:
    print(json.dumps({"status": "error", "error": type(exc).__name__ + ": " + str(exc)}))
"""


def subprocess_runner(request: RunRequest) -> RunResult:
    """A stand-in for one sandbox: every call is a fresh isolated-mode Python process."""
    assert request.call is not None
    payload = {"code": request.code, "function": request.call.function, "arguments": request.call.arguments}
    proc = subprocess.run([sys.executable, "-I", "-c", _DRIVER], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=request.limits.timeout_s, check=True)
    out = json.loads(proc.stdout)
    return RunResult(status=out["status"], value=out.get("value"), error=out.get("error"))


def test_verify_in_sandbox_keeps_good_records_and_reports_bad_ones(records: list[dict[str, Any]]) -> None:
    good = [copy.deepcopy(r) for r in records[:6]]
    bad = copy.deepcopy(records[6])
    name = bad["reference_solution"][0][0]["name"]
    bad["codes"][name] = f"def {name}(**kwargs):\n    return 'nothing here'\n"
    report = verify_in_sandbox([*good, bad], subprocess_runner)
    assert [r["id"] for r in report.kept] == [r["id"] for r in good]
    assert [x.id for x in report.rejected] == [bad["id"]]
    assert report.counts == {"gold_not_produced": 1}
    expected_calls = sum(len(list(_calls(r))) for r in good)
    assert report.calls >= expected_calls


def test_a_dead_sandbox_is_not_a_bad_task(records: list[dict[str, Any]]) -> None:
    def dead(request: RunRequest) -> RunResult:
        raise SandboxError("sandbox went away")

    with pytest.raises(SandboxError):
        verify_in_sandbox(records[:1], dead)


def test_foreign_deployers_are_never_executed_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code a replaced stage 5 wrote is not exec'd by the generator; the sandbox layer judges it."""
    import toolgym.taskgen.generator as gen

    def refuse(codes: Any) -> Any:
        raise AssertionError("foreign code must not run in-process")

    monkeypatch.setattr(gen, "own_code_executor", refuse)

    def echoing_deploy(tool: Any, world: Any, rng: Any) -> str:
        source = deploy(tool, world, rng)
        return source.replace("    if unexpected:", "    return repr(locals())\n    if unexpected:", 1)

    foreign = list(generate(9, 5, pipeline=Pipeline(deploy=echoing_deploy)))
    assert len(foreign) == 5
    report = verify_in_sandbox(foreign, subprocess_runner, probes=False)
    assert not report.kept and sum(report.counts.values()) == 5


def test_public_api_is_pinned() -> None:
    assert toolgen.__all__ == sorted(toolgen.__all__, key=lambda s: (not s.isupper(), s))
    assert {"generate", "single_step_tasks", "stats", "verify_in_sandbox", "ScalingKnobs", "Pipeline",
            "check_record", "assign_split"} <= set(toolgen.__all__)
    assert replace(ScalingKnobs(), max_distractors=2).max_distractors == 2
