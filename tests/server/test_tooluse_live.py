"""FTRL's rewards (docs/methods.md#ftrl), exactly, over HTTP with Docker sandboxes.

The expected numbers are written out here from docs/methods.md, not taken from the env's own
verifier: per turn with calls (k golds solved, n valid calls) solve_f1 2k/(n+1),
solve_precision k/n, solve_rate k, solve_pr k^2/n; a turn without a valid call, first match
wins: empty -0.5, leftover tags -0.3, the gold answer 1/(1+u), all golds solved 0.5, else 0;
episode metrics solve_precision S/N (1 if N = 0), solve_rate S/U, solve_f1 2S/(N+U).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_kit import (
    ENV,
    TASKS_URL,
    Server,
    ServerFarm,
    call,
    close,
    expect_error,
    openai_message,
    register,
    reset,
    state,
    step,
    tags,
    tool_message,
    tooluse_record,
)

from toolgym.envs.tooluse.builtin import builtin_tasks

pytestmark = pytest.mark.docker

VARIANTS = ("solve_f1", "solve_precision", "solve_rate", "solve_pr")
BUILTIN = {record["id"]: record for _, record in builtin_tasks()}
ONE_PER_TYPE = ("tu-single-2", "tu-parallel-2", "tu-multi-2", "tu-pmulti-1")


def turn_reward(variant: str, k: int, n: int) -> float:
    return {"solve_f1": 2 * k / (n + 1), "solve_precision": k / n, "solve_rate": float(k),
            "solve_pr": k * k / n}[variant]


def metrics(solved: int, calls: int, golds: int) -> dict[str, float]:
    return {"solve_precision": solved / calls if calls else 1.0, "solve_rate": solved / golds,
            "solve_f1": 2 * solved / (calls + golds)}


def golds_of(task_id: str) -> int:
    return sum(len(v) for v in BUILTIN[task_id]["unsolved_set"].values())


@pytest.fixture(scope="module")
def server(farm: ServerFarm) -> Server:
    return farm.start("docker", warm_pool_size=2)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def assert_no_gold_in(text: str, record: dict[str, Any]) -> None:
    assert "unsolved_set" not in text and "reference_solution" not in text
    for source in record["codes"].values():
        assert source.strip().splitlines()[-1] not in text, "tool source leaked"
    assert "def " not in text


def play_reference(client: httpx.Client, task_id: str, variant: str | None) -> None:
    """Replay the task's reference solution, then answer with the gold answer."""
    record = BUILTIN[task_id]
    options: dict[str, Any] = {"tool_timeout_s": 2}
    if variant is not None:
        options["reward"] = variant
    variant = variant or "solve_f1"
    r = client.post("/v1/episodes", json={"env_id": ENV, "task_id": task_id, "options": options})
    assert r.status_code == 201, r.text
    assert_no_gold_in(json.dumps(r.json()["observation"]), record)
    # The episode id is random hex: a short numeric answer ("100") may turn up in it by chance.
    shown = {key: value for key, value in r.json().items() if key != "episode_id"}
    assert record["answer"] not in json.dumps(shown), "the gold answer is in the reset"
    episode_id = r.json()["episode_id"]
    assert r.json()["info"]["metrics"] == metrics(0, 0, golds_of(task_id))
    golds, solved, calls, total = golds_of(task_id), 0, 0, 0.0
    for turn, turn_calls in enumerate(record["reference_solution"]):
        result = step(client, episode_id, tags(*turn_calls))
        n = len(turn_calls)
        solved, calls = solved + n, calls + n
        expected = turn_reward(variant, n, n)
        assert result["reward"] == pytest.approx(expected, abs=1e-12), (task_id, turn, result)
        info = result["info"]
        assert info["status"] == "ok" and info["retryable"] is False
        assert info["reward_components"] == {"solved": n, "calls": n, variant: pytest.approx(expected)}
        assert info["calls_solved"] == [True] * n
        assert info["metrics"] == pytest.approx(metrics(solved, calls, golds))
        assert [m["name"] for m in result["observation"]["messages"]] == [c["name"] for c in turn_calls]
        assert all(not m["content"].startswith("an error occured") for m in result["observation"]["messages"])
        assert not result["terminated"] and not result["truncated"] and "reason" not in info
        for key in ("answer", "unsolved_set", "codes", "golds"):
            assert key not in info
        total += result["reward"]
    final = step(client, episode_id, f"The answer is {record['answer']}.")
    assert final["reward"] == 1.0, final  # 1 / (1 + 0): every gold solved before the answer
    assert final["terminated"] and not final["truncated"]
    assert final["info"]["reason"] == "answered" and final["info"]["answer_correct"] is True
    assert final["info"]["reward_components"] == {"answer_correct": 1.0}
    assert final["info"]["metrics"] == {"solve_precision": 1.0, "solve_rate": 1.0, "solve_f1": 1.0}
    assert final["observation"]["messages"] == []
    st = state(client, episode_id)
    assert st["status"] == "finished" and st["reason"] == "answered"
    assert st["turn"] == len(record["reference_solution"]) + 1
    assert st["total_reward"] == pytest.approx(total + 1.0)


@pytest.mark.parametrize("task_id", sorted(BUILTIN))
def test_reference_solution_earns_ftrl_rewards_default_variant(client: httpx.Client, task_id: str) -> None:
    play_reference(client, task_id, None)


@pytest.mark.parametrize("variant", VARIANTS[1:])
@pytest.mark.parametrize("task_id", ONE_PER_TYPE)
def test_reference_solution_earns_ftrl_rewards_each_variant(
    client: httpx.Client, task_id: str, variant: str
) -> None:
    play_reference(client, task_id, variant)


def test_builtin_tasks_cover_all_four_question_types() -> None:
    types = {BUILTIN[t]["question_type"] for t in ONE_PER_TYPE}
    assert types == {"single_hop", "parallel_single_hop", "multi_hop", "parallel_multi_hop"}
    assert {r["question_type"] for r in BUILTIN.values()} == types


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_turn_with_wasted_calls_is_scored_by_the_variant(client: httpx.Client, variant: str) -> None:
    """k = 2 solved of n = 3 calls: f1 1.0, precision 2/3, rate 2, pr 4/3 (the same call twice
    solves one gold only: at most one per call, removed once solved)."""
    episode_id = reset(client, "tu-parallel-1", reward=variant)["episode_id"]
    result = step(client, episode_id, tags(call("get_mountain", name="Mount Teryn"),
                                           call("get_mountain", name="Mount Oskol"),
                                           call("get_mountain", name="Mount Teryn")))
    assert result["reward"] == pytest.approx(turn_reward(variant, 2, 3), abs=1e-12)
    assert result["info"]["calls_solved"] == [True, True, False]
    assert result["info"]["metrics"] == pytest.approx(metrics(2, 3, 2))
    again = step(client, episode_id, tags(call("get_mountain", name="Mount Oskol")))
    assert again["reward"] == 0.0, "a solved gold pays once"
    final = step(client, episode_id, "ELEVATIONS: 3,120, 2,875")  # FTRL normalizes case and commas
    assert final["reward"] == 1.0 and final["info"]["reward_components"] == {"answer_correct": 1.0}
    assert final["info"]["metrics"] == pytest.approx(metrics(2, 4, 2))
    assert final["info"]["metrics"]["solve_f1"] != 1.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_wrong_arguments_earn_nothing(client: httpx.Client, variant: str) -> None:
    episode_id = reset(client, "tu-single-1", reward=variant)["episode_id"]
    result = step(client, episode_id, tags(call("get_city_info", city="Lindqvist")))
    assert result["reward"] == 0.0 and result["info"]["calls_solved"] == [False]
    assert result["info"]["metrics"] == {"solve_precision": 0.0, "solve_rate": 0.0, "solve_f1": 0.0}
    final = step(client, episode_id, "48210")
    assert final["reward"] == 0.5, "1/(1+u) with u = 1 unsolved gold"
    assert final["info"]["metrics"]["solve_rate"] == 0.0


def test_answering_at_once_is_not_full_credit(client: httpx.Client) -> None:
    episode_id = reset(client, "tu-multi-1")["episode_id"]
    final = step(client, episode_id, "Imara Solberg")
    assert final["reward"] == pytest.approx(1 / 3), "1/(1+u) with u = 2 unsolved golds"
    assert final["info"]["reward_components"] == {"answer_correct": pytest.approx(1 / 3)}
    assert final["info"]["metrics"] == {"solve_precision": 1.0, "solve_rate": 0.0, "solve_f1": 0.0}
    assert final["terminated"] and final["info"]["reason"] == "answered"


def solve_single_1(client: httpx.Client, **options: Any) -> str:
    episode_id = str(reset(client, "tu-single-1", **options)["episode_id"])
    assert step(client, episode_id, tags(call("get_city_info", city="Varnholt")))["reward"] == 1.0
    return episode_id


@pytest.mark.parametrize(("solve_first", "action", "reward", "rule", "reason"), [
    (False, "", -0.5, "empty_response", "no_tool_call"),
    (True, "  <|im_end|>", -0.5, "empty_response", "no_tool_call"),
    (False, "<tool_call>{not json}</tool_call>", -0.3, "malformed_tool_call", "no_tool_call"),
    (True, "It is 48210 <tool_call>{\"name\": \"get_city_info\"}</tool_call>", -0.3, "malformed_tool_call",
     "no_tool_call"),
    (True, "48210 people <tool_parsed_response>", -0.3, "malformed_tool_call", "no_tool_call"),
    (True, "About 48,210 people.<|im_end|>", 1.0, "answer_correct", "answered"),
    (True, "I do not know.", 0.5, "all_solved", "answered"),
    (False, "I do not know.", 0.0, "no_credit", "answered"),
])
def test_final_turn_rules(
    client: httpx.Client, solve_first: bool, action: str, reward: float, rule: str, reason: str
) -> None:
    episode_id = solve_single_1(client) if solve_first else reset(client, "tu-single-1")["episode_id"]
    final = step(client, episode_id, action)
    assert final["reward"] == reward, final
    assert final["info"]["reward_components"] == {rule: reward}
    assert final["terminated"] and not final["truncated"] and final["info"]["reason"] == reason
    expected_status = "invalid_action" if rule == "malformed_tool_call" else "ok"
    assert final["info"]["status"] == expected_status


def test_openai_tool_calls_work_like_tags(client: httpx.Client) -> None:
    calls = [call("get_weather", city="Lindqvist"), call("get_timezone", city="Tessaly Bay")]
    by_tags = reset(client, "tu-parallel-2")["episode_id"]
    by_openai = reset(client, "tu-parallel-2")["episode_id"]
    a = step(client, by_tags, tags(*calls))
    b = step(client, by_openai, openai_message(*calls))
    assert a == b
    assert a["reward"] == pytest.approx(4 / 3) and a["info"]["calls_solved"] == [True, True]
    assert [m["content"] for m in b["observation"]["messages"]] == ["clear, 14 degrees celsius", "UTC+9"]
    # Arguments as an object (not a JSON string) are accepted too; the answer as content.
    c_id = reset(client, "tu-parallel-2")["episode_id"]
    c = step(client, c_id, {"content": None, "tool_calls": [
        {"type": "function", "function": {"name": x["name"], "arguments": x["arguments"]}} for x in calls]})
    assert c == a
    final = step(client, by_openai, {"role": "assistant", "content": "Clear, UTC+9.", "tool_calls": []})
    assert final["reward"] == 1.0 and final["info"]["metrics"]["solve_f1"] == 1.0
    for episode_id in (by_tags, c_id):
        close(client, episode_id)


def test_turn_limit_of_20_truncates(client: httpx.Client) -> None:
    episode_id = reset(client, "tu-single-1")["episode_id"]
    wrong = tags(call("get_city_info", city="Lindqvist"))
    for turn in range(1, 21):
        result = step(client, episode_id, wrong)
        assert result["terminated"] is False
        if turn < 20:
            assert result["truncated"] is False and "reason" not in result["info"], turn
    assert result["truncated"] is True and result["info"]["reason"] == "max_turns"
    err = expect_error(client.post(f"/v1/episodes/{episode_id}/step", json={"action": "48210"}),
                       409, "episode_finished")
    assert err["details"]["reason"] == "max_turns"
    st = state(client, episode_id)
    assert st["status"] == "finished" and st["reason"] == "max_turns" and st["turn"] == 20


def test_max_turns_option(client: httpx.Client) -> None:
    episode_id = reset(client, "tu-multi-2", max_turns=2)["episode_id"]
    first = step(client, episode_id, tags(call("find_author", title="Salt Meridian")))
    assert first["reward"] == 1.0 and not first["truncated"]
    second = step(client, episode_id, tags(call("get_person", name="Osei Farrow")))
    assert second["reward"] == 1.0 and second["truncated"] and second["info"]["reason"] == "max_turns"


def test_strict_refuses_credit_for_a_gold_in_the_arguments(client: httpx.Client) -> None:
    record = tooluse_record({}, golds={"echo": ["PLATYPUS-88"]}, answer="PLATYPUS-88")
    (task_id,) = register(client, record)
    echo_gold = tags(call("echo", text="the PLATYPUS-88"))
    lax = reset(client, task_id)["episode_id"]
    assert step(client, lax, echo_gold)["reward"] == 1.0, "FTRL's substring check credits an echo"
    strict = reset(client, task_id, strict=True)["episode_id"]
    refused = step(client, strict, echo_gold)
    assert refused["reward"] == 0.0 and refused["info"]["calls_solved"] == [False]
    assert tool_message(refused) == "the PLATYPUS-88"
    # Strict still credits a tool that finds the gold itself.
    honest = solve_single_1(client, strict=True)
    close(client, honest)
    for episode_id in (lax, strict):
        close(client, episode_id)


def test_gold_never_reaches_the_policy(client: httpx.Client) -> None:
    secrets = ["ANSWER-MARKER-51", "GOLD-MARKER-77", "CODE-MARKER-93", "REFSOL-MARKER-12"]
    source = "# CODE-MARKER-93\ndef lookup(key):\n    return 'value for ' + str(key)\n"
    record = tooluse_record({"lookup": source}, golds={"lookup": ["GOLD-MARKER-77"]}, answer="ANSWER-MARKER-51",
                            params={"lookup": {"key": "string"}})
    record["reference_solution"] = [[call("lookup", key="REFSOL-MARKER-12")]]
    record["question_type"] = "single_hop"
    (task_id,) = register(client, record)
    seen: list[str] = []

    def keep(r: httpx.Response) -> Any:
        assert r.status_code < 300, r.text
        seen.append(r.text)
        return r.json() if r.headers["content-type"].startswith("application/json") else r.text

    started = keep(client.post("/v1/episodes", json={"env_id": ENV, "task_id": task_id}))
    episode_id = started["episode_id"]
    keep(client.post(f"/v1/episodes/{episode_id}/step", json={"action": tags(call("lookup", key="x"))}))
    keep(client.post(f"/v1/episodes/{episode_id}/fork", json={}))
    keep(client.post(f"/v1/episodes/{episode_id}/step", json={"action": "no idea"}))
    keep(client.get(f"/v1/episodes/{episode_id}"))
    keep(client.get(f"/v1/episodes/{episode_id}/trajectory"))
    keep(client.get("/v1/episodes"))
    keep(client.get("/v1/envs"))
    keep(client.get(f"{TASKS_URL}/stats"))
    page = keep(client.get(TASKS_URL, params={"limit": 1000}))
    blob = "\n".join(seen)
    for secret in secrets:
        assert secret not in blob, f"{secret} reached the client"
    (mine,) = [t for t in page["tasks"] if t["id"] == task_id]
    assert mine["metadata"] == {"question_type": "single_hop", "tools": ["lookup", "echo"], "golds": 1}
    for task in page["tasks"]:
        assert not {"answer", "unsolved_set", "codes", "reference_solution"} & set(task["metadata"])
        builtin = BUILTIN.get(task["id"])
        if builtin is not None:
            assert builtin["answer"] not in json.dumps(task)
    for episode in client.get("/v1/episodes", params={"status": "live"}).json()["episodes"]:
        close(client, episode["episode_id"])
