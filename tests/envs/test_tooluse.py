"""ToolUse-v0 at the env level: FTRL's parsing, verification and rewards (docs/methods.md#ftrl,
bytedance/FTRL ``Code/utils`` and ``Code/verl/utils/reward_score/tool.py``), with tool code
run in a real sandbox."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from toolgym.envs.actions import parse_action
from toolgym.envs.base import AssistantMessage, Task
from toolgym.envs.tooluse import ToolUseFamily, ToolUseOptions
from toolgym.envs.tooluse.builtin import builtin_tasks
from toolgym.envs.tooluse.verifier import (
    answer_verify,
    episode_metrics,
    final_turn_reward,
    tool_turn_reward,
)
from toolgym.errors import ValidationFailed

FAMILY = ToolUseFamily()


def tags(*calls: dict[str, Any]) -> str:
    return "".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


def task_of(record: dict[str, Any], split: str = "train") -> Task:
    rec = dict(record)
    task_id = rec.pop("id", "t")
    return Task(env_id=FAMILY.env_id, id=task_id, split=split, record=FAMILY.validate_record(rec))


# --- verification, as FTRL's answer_verify ----------------------------------------------------------
@pytest.mark.parametrize(
    ("output", "gold", "expected"),
    [
        ("The city has 48,210 people", "48210", True),  # commas removed on both sides
        ({"population": 48210}, "48210", True),  # dicts are JSON-dumped first
        ("Eskara and Oradel", "Eskara, Oradel", True),  # gold split on ", "; every piece needed
        ("Eskara only", "Eskara, Oradel", False),
        ("IMARA SOLBERG", "Imara Solberg", True),  # case-insensitive
        ("Imara", "Imara Solberg", False),
        ([1, 2, 3], "1, 2", True),
        (3120, "3120", True),
    ],
)
def test_answer_verify_matches_ftrl(output: Any, gold: str, expected: bool) -> None:
    assert answer_verify(output, gold) is expected


@pytest.mark.parametrize(
    ("variant", "k", "n", "reward"),
    [
        ("solve_f1", 2, 3, 2 * 2 / (3 + 1)),
        ("solve_f1", 0, 1, 0.0),
        ("solve_precision", 1, 4, 0.25),
        ("solve_rate", 3, 5, 3.0),
        ("solve_pr", 2, 4, 1.0),
    ],
)
def test_tool_turn_reward_variants(variant: Any, k: int, n: int, reward: float) -> None:
    assert tool_turn_reward(variant, k, n) == pytest.approx(reward)


@pytest.mark.parametrize(
    ("content", "answer", "unsolved", "reward", "rule"),
    [
        ("", "x", 2, -0.5, "empty_response"),
        ("oops <tool_call> half", "x", 2, -0.3, "malformed_tool_call"),
        ("see <tool_parsed_response>", "x", 0, -0.3, "malformed_tool_call"),  # first match wins
        ("It is Imara Solberg.", "Imara Solberg", 1, 0.5, "answer_correct"),  # 1/(1+u)
        ("It is Imara Solberg.", "Imara Solberg", 0, 1.0, "answer_correct"),
        ("I do not know", "Imara Solberg", 0, 0.5, "all_solved"),
        ("I do not know", "Imara Solberg", 3, 0.0, "no_credit"),
        ("48,210", "48210", 2, 1 / 3, "answer_correct"),
    ],
)
def test_final_turn_rules(content: str, answer: str, unsolved: int, reward: float, rule: str) -> None:
    got, got_rule = final_turn_reward(content, answer, unsolved)
    assert got == pytest.approx(reward)
    assert got_rule == rule


def test_episode_metrics_use_ftrl_names_and_edges() -> None:
    assert episode_metrics(2, 4, 2) == {"solve_precision": 0.5, "solve_rate": 1.0, "solve_f1": pytest.approx(4 / 6)}
    assert episode_metrics(0, 0, 3)["solve_precision"] == 1.0  # S/N is 1 when N = 0, as FTRL


# --- parsing, as FTRL's parse_qwen -----------------------------------------------------------------
def test_parse_several_calls_and_string_arguments() -> None:
    text = 'Let me look.<tool_call>\n{"name": "a", "arguments": "{\\"x\\": 1}"}\n</tool_call>' + tags(
        {"name": "b", "arguments": {}}) + "<|im_end|>"
    turn = parse_action(text, turn=3)
    assert turn.content == "Let me look."
    assert [(c.id, c.name, c.arguments) for c in turn.calls] == [("call_3_0", "a", {"x": 1}), ("call_3_1", "b", {})]


def test_unparseable_blocks_are_skipped_and_all_bad_means_content() -> None:
    bad = '<tool_call>{"name": "a", "arguments": {</tool_call>'
    turn = parse_action("text " + bad + tags({"name": "b", "arguments": {"y": 2}}))
    assert [c.name for c in turn.calls] == ["b"] and turn.skipped_calls == 1
    only_bad = parse_action("text " + bad)
    assert only_bad.calls == [] and only_bad.content == ("text " + bad).strip()
    no_args = parse_action('<tool_call>{"name": "a"}</tool_call>')
    assert no_args.calls == [] and no_args.skipped_calls == 1


def test_openai_tool_calls_are_parsed_like_tags() -> None:
    msg = AssistantMessage(content="", tool_calls=({"type": "function", "function": {
        "name": "get_city_info", "arguments": '{"city": "Varnholt"}'}},))
    turn = parse_action(msg)
    assert [(c.name, c.arguments) for c in turn.calls] == [("get_city_info", {"city": "Varnholt"})]


# --- records -------------------------------------------------------------------------------------------
def test_records_accept_ftrl_json_strings() -> None:
    _, record = builtin_tasks()[0]
    as_strings = {**record, "tools": json.dumps(record["tools"]), "codes": json.dumps(record["codes"]),
                  "unsolved_set": json.dumps(record["unsolved_set"])}
    as_strings.pop("id")
    assert FAMILY.validate_record(as_strings)["unsolved_set"] == record["unsolved_set"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"tools": "not json"}, "tools"),
        ({"codes": {"get_city_info": "def broken(:\n"}}, "codes"),
        ({"codes": {}}, "codes"),
        ({"unsolved_set": {"get_city_info": "48210"}}, "unsolved_set"),
        ({"unsolved_set": {"get_city_info": []}}, "unsolved_set"),
        ({"answer": None}, "answer"),
    ],
)
def test_bad_records_name_the_field(change: dict[str, Any], field: str) -> None:
    _, record = builtin_tasks()[0]
    bad = {**record, **change}
    with pytest.raises(ValidationFailed) as err:
        FAMILY.validate_record(bad)
    assert err.value.details.get("field") == field


def test_metadata_never_carries_the_gold() -> None:
    for _, record in builtin_tasks():
        meta = json.dumps(FAMILY.task_metadata(FAMILY.validate_record(record)))
        assert record["answer"] not in meta
        for golds in record["unsolved_set"].values():
            assert not any(g in meta for g in golds)


def test_builtin_tasks_cover_all_four_question_types_in_train() -> None:
    types = {r["question_type"] for split, r in builtin_tasks() if split == "train"}
    assert types == {"single_hop", "parallel_single_hop", "multi_hop", "parallel_multi_hop"}


# --- episodes on a real sandbox ------------------------------------------------------------------------
def play_reference(record: dict[str, Any], runner: Any, reward: str = "solve_f1") -> list[Any]:
    episode = FAMILY.start(task_of(record), ToolUseOptions(reward=reward), runner, random.Random(0))  # type: ignore[arg-type]
    obs, _ = episode.reset()
    assert obs.tools and obs.messages[-1]["role"] == "user"
    steps = [episode.step(tags(*turn)) for turn in record["reference_solution"]]
    steps.append(episode.step(f"The answer: {record['answer']}"))
    return steps


@pytest.mark.docker
@pytest.mark.parametrize("index", range(len(builtin_tasks())))
def test_reference_solution_earns_ftrl_rewards(index: int, runner: Any) -> None:
    _, record = builtin_tasks()[index]
    steps = play_reference(record, runner)
    golds = sum(len(v) for v in record["unsolved_set"].values())
    for turn, step in zip(record["reference_solution"], steps, strict=False):
        k = step.info["reward_components"]["solved"]
        assert step.reward == pytest.approx(2 * k / (len(turn) + 1))
        assert not step.terminated
    last = steps[-1]
    assert last.terminated and last.info["reason"] == "answered"
    assert last.reward == pytest.approx(1.0)  # 1/(1+0): every gold solved, answer right
    assert sum(s.info["reward_components"].get("solved", 0) for s in steps) == golds
    assert last.info["metrics"] == {"solve_precision": 1.0, "solve_rate": 1.0, "solve_f1": 1.0}
    assert FAMILY.episode_success(sum(s.reward for s in steps), last.info)


@pytest.mark.docker
def test_each_call_solves_at_most_one_gold_and_repeats_earn_nothing(runner: Any) -> None:
    record = dict(builtin_tasks()[3][1])  # tu-parallel-1: two mountains
    episode = FAMILY.start(task_of(record), ToolUseOptions(), runner, random.Random(0))
    episode.reset()
    teryn = {"name": "get_mountain", "arguments": {"name": "Mount Teryn"}}
    first = episode.step(tags(teryn, teryn))
    assert first.info["reward_components"]["solved"] == 1 and first.reward == pytest.approx(2 * 1 / 3)
    again = episode.step(tags(teryn))
    assert again.reward == 0.0
    assert again.info["metrics"]["solve_precision"] == pytest.approx(1 / 3)


@pytest.mark.docker
def test_tool_errors_use_ftrl_message_and_count_as_calls(runner: Any) -> None:
    record = dict(builtin_tasks()[0][1])
    episode = FAMILY.start(task_of(record), ToolUseOptions(), runner, random.Random(0))
    episode.reset()
    step = episode.step(tags({"name": "get_city_info", "arguments": {"city": "Atlantis"}},
                             {"name": "nope", "arguments": {}},
                             {"name": "get_city_info", "arguments": {"town": "Varnholt"}}))
    contents = [m["content"] for m in step.observation.messages]
    assert contents[0] == "an error occured when call get_city_info: unknown city"
    assert contents[1].startswith("an error occured when call nope: ")
    assert "unexpected keyword argument" in contents[2]
    assert step.reward == 0.0 and step.info["reward_components"]["calls"] == 3


@pytest.mark.docker
def test_strict_refuses_a_gold_the_arguments_already_held(runner: Any) -> None:
    echo_tool = "def lookup(q):\n    return 'result: ' + q\n"
    record = {
        "messages": [{"role": "user", "content": "What is the secret?"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "codes": {"lookup": echo_tool}, "answer": "zebra", "unsolved_set": {"lookup": ["zebra"]},
    }
    for strict, expected in ((False, 1.0), (True, 0.0)):
        episode = FAMILY.start(task_of(record), ToolUseOptions(strict=strict), runner, random.Random(0))
        episode.reset()
        assert episode.step(tags({"name": "lookup", "arguments": {"q": "zebra"}})).reward == expected


@pytest.mark.docker
def test_turn_limit_truncates(runner: Any) -> None:
    record = dict(builtin_tasks()[0][1])
    episode = FAMILY.start(task_of(record), ToolUseOptions(max_turns=2), runner, random.Random(0))
    episode.reset()
    call = tags({"name": "get_stock_price", "arguments": {"ticker": "BWD"}})
    assert not episode.step(call).truncated
    last = episode.step(call)
    assert last.truncated and not last.terminated and last.info["reason"] == "max_turns"


REPORT_TOOL = "def report(n):\n    return 'filler ' * (n // 7) + 'the code is QUOKKA-5521'\n"


def report_record() -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "What is the code?"}],
        "tools": [{"type": "function", "function": {"name": "report", "parameters": {"type": "object"}}}],
        "codes": {"report": REPORT_TOOL}, "answer": "QUOKKA-5521", "unsolved_set": {"report": ["QUOKKA-5521"]},
    }


@pytest.mark.docker
def test_a_10_mb_tool_output_is_verified_whole(runner: Any) -> None:
    """FTRL's verifier reads the whole return value: a gold at the end of 10 MB still counts.
    (What the policy is shown is cut by the server's ``max_output_chars``, not here.)"""
    episode = FAMILY.start(task_of(report_record()), ToolUseOptions(), runner, random.Random(0))
    episode.reset()
    step = episode.step(tags({"name": "report", "arguments": {"n": 10_000_000}}))
    content = step.observation.messages[0]["content"]
    assert len(content) > 10_000_000 and content.endswith("the code is QUOKKA-5521")
    assert step.info["reward_components"]["solved"] == 1 and step.reward == pytest.approx(1.0)


@pytest.mark.docker
def test_a_tool_output_over_the_hard_cap_is_a_clear_error(runner: Any) -> None:
    options = ToolUseOptions(max_tool_output_bytes=1024 * 1024)
    episode = FAMILY.start(task_of(report_record()), options, runner, random.Random(0))
    episode.reset()
    step = episode.step(tags({"name": "report", "arguments": {"n": 2_000_000}}))
    content = step.observation.messages[0]["content"]
    assert content == (
        "an error occured when call report: the tool returned more than 1048576 bytes"
        " (max_tool_output_bytes; raise it in the reset options, up to 67108864)"
    )
    assert step.info["reward_components"] == {"solved": 0, "calls": 1, "solve_f1": 0.0}
    assert step.info["status"] == "ok", "the tool's failure is data, as a tool that raises"
    # Under the cap, the same tool answers in the same sandbox.
    again = episode.step(tags({"name": "report", "arguments": {"n": 700}}))
    assert again.observation.messages[0]["content"].endswith("QUOKKA-5521") and again.reward == pytest.approx(1.0)


def test_the_hard_cap_option_is_bounded() -> None:
    assert FAMILY.parse_options({"max_tool_output_bytes": 1 << 20}, "train").max_tool_output_bytes == 1 << 20
    with pytest.raises(ValidationFailed):
        FAMILY.parse_options({"max_tool_output_bytes": 1 << 30}, "train")


NAP_TOOL = (
    "import time\n\ndef nap(city):\n    time.sleep(0.5)\n    return {'city': city, 'code': city.upper() + '-7'}\n"
)


def nap_record() -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Codes of Oslo and Lima?"}],
        "tools": [{"type": "function", "function": {"name": "nap", "parameters": {"type": "object"}}}],
        "codes": {"nap": NAP_TOOL}, "answer": "OSLO-7, LIMA-7", "unsolved_set": {"nap": ["OSLO-7", "LIMA-7"]},
    }


@pytest.mark.docker
def test_a_turns_parallel_calls_run_at_once_with_sequential_results(sandbox: Any) -> None:
    """The server's runner (``SandboxSlot``) has ``run_many``: two calls that each sleep 0.5 s take
    well under 1 s together, and rewards, messages and info equal those of one call at a time."""
    from toolgym.server.episodes import SandboxSlot

    oslo, lima = ({"name": "nap", "arguments": {"city": c}} for c in ("Oslo", "Lima"))
    turn = tags(oslo, {"name": "nope", "arguments": {}}, lima, oslo)
    steps = []
    for runner in (sandbox.run, SandboxSlot("ep", sandbox), SandboxSlot("ep", sandbox)):
        episode = FAMILY.start(task_of(nap_record()), ToolUseOptions(), runner, random.Random(0))
        episode.reset()
        started = time.monotonic()
        steps.append((episode.step(turn), time.monotonic() - started))
    (seq, seq_s), (_, _), (par, par_s) = steps
    assert seq_s >= 1.5 and par_s < 0.95, (seq_s, par_s)
    assert par.reward == seq.reward == pytest.approx(2 * 2 / 5)
    assert par.observation.messages == seq.observation.messages and par.info == seq.info
    assert [m["content"] for m in par.observation.messages][2] == '{"city": "Lima", "code": "LIMA-7"}'
