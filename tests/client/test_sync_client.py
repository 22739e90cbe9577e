"""``EnvClient`` against live servers on loopback: every method, typed results, the error
classes coming back, 503 retries with backoff, and idempotent steps.

These use the ``process`` sandbox backend (FunctionCall needs no sandbox at all; the ToolUse
episodes here test the client, not the isolation), so they run without Docker; the
Docker-backed runs are in ``test_rewards.py``, ``test_gym_checker.py`` and ``test_vector.py``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from scripted_policies import (
    FUNCTIONCALL,
    FUNCTIONCALL_SPLITS,
    FUNCTIONCALL_TASKS,
    TOOLUSE,
    TOOLUSE_SPLITS,
    reference_actions,
    reference_rewards,
    tool_calls_text,
)

import toolgym
from toolgym import errors
from toolgym.client import EnvClient, ResetResult, RetryPolicy, StepResult

Server = Callable[..., Any]


class Recording(httpx.BaseTransport):
    """A real HTTP transport that notes what went over the wire: (method, path, status)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.log: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.log.append((request.method, request.url.path, response.status_code))
        return response

    def close(self) -> None:
        self.inner.close()


class LoseFirstStepAnswer(httpx.BaseTransport):
    """A real HTTP transport that delivers the first step to the server, reads its answer,
    then reports a read timeout: the network lost the answer of a step that was played."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.step_keys: list[str] = []
        self.lost: dict[str, Any] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/step"):
            self.step_keys.append(request.headers["Idempotency-Key"])
            if self.lost is None:
                response.read()
                self.lost = response.json()
                response.close()
                raise httpx.ReadTimeout("the answer was lost on the way back", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def gold_action(task_id: str) -> str:
    return tool_calls_text(FUNCTIONCALL_TASKS[task_id]["gold_calls"])


def live_count(client: EnvClient) -> int:
    return int(client.episodes(status="live")["total"])


# --- server, envs, tasks ------------------------------------------------------------------------
def test_health_version_and_envs(process_server: Any) -> None:
    with EnvClient(process_server.base_url) as client:
        assert client.health() == {"status": "ok"}
        version = client.version()
        assert version == {"version": toolgym.__version__, "api_version": toolgym.API_VERSION,
                           "envs": ["toolgym/CodeMath-v0", "toolgym/FunctionCall-v0", "toolgym/ToolUse-v0"],
                           "isolation": "process", "replica": version["replica"]}
        # The replica token is the one this server's episode ids carry.
        episode = client.reset(TOOLUSE, options={"split": "train"})
        assert episode.episode_id.startswith(f"ep-{version['replica']}-"), (episode.episode_id, version)
        client.close(episode.episode_id)
        envs = {e["id"]: e for e in client.envs()}
        assert sorted(envs) == version["envs"]
        for spec in envs.values():
            assert spec["description"] and spec["action_format"] and spec["reward_spec"] and spec["record_format"]
            assert set(spec["tasks"]) == {"train", "validation", "test"}
        # The reset options, documented per family (docs/architecture.md).
        assert {"reward", "strict", "max_turns", "tool_timeout_s", "split", "sampler"} <= set(envs[TOOLUSE]["options"])
        assert {"max_turns", "stateful", "timeout_s"} <= set(envs["toolgym/CodeMath-v0"]["options"])
        assert {"verifier"} <= set(envs[FUNCTIONCALL]["options"])
        assert envs[FUNCTIONCALL]["tasks"] == dict(Counter(FUNCTIONCALL_SPLITS.values()))


def test_tasks_pages_and_splits(process_server: Any) -> None:
    with EnvClient(process_server.base_url) as client:
        total = len(FUNCTIONCALL_TASKS)  # the built-in tasks, as the server loads them
        whole = client.tasks(FUNCTIONCALL, limit=1000)
        assert whole["total"] == total and {t["id"] for t in whole["tasks"]} == set(FUNCTIONCALL_TASKS)
        paged: list[str] = []
        for offset in range(0, total, 37):
            page = client.tasks(FUNCTIONCALL, offset=offset, limit=37)
            assert page["offset"] == offset and page["limit"] == 37 and page["total"] == total
            assert len(page["tasks"]) == min(37, total - offset)
            paged += [t["id"] for t in page["tasks"]]
        assert paged == [t["id"] for t in whole["tasks"]]
        assert client.tasks(FUNCTIONCALL, offset=total)["tasks"] == []
        for split, count in Counter(FUNCTIONCALL_SPLITS.values()).items():
            page = client.tasks(FUNCTIONCALL, split=split, limit=1000)
            assert page["total"] == count and {t["split"] for t in page["tasks"]} == {split}
            assert {t["id"] for t in page["tasks"]} == {i for i, s in FUNCTIONCALL_SPLITS.items() if s == split}
        tooluse = client.tasks(TOOLUSE, split="test")["tasks"]
        assert {t["id"] for t in tooluse} == {i for i, s in TOOLUSE_SPLITS.items() if s == "test"}
        for task in tooluse:  # metadata, never the gold
            assert set(task["metadata"]) == {"question_type", "tools", "golds"}
        with pytest.raises(errors.ValidationFailed, match="split"):
            client.tasks(FUNCTIONCALL, split="eval")
        with pytest.raises(errors.ValidationFailed, match="limit"):
            client.tasks(FUNCTIONCALL, limit=0)


def test_register_tasks_jsonl_duplicates_and_bad_records(process_server: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    base = FUNCTIONCALL_TASKS["fc-math-001"]
    records = [
        {"id": f"reg-{tag}-1", "split": "validation", "messages": base["messages"], "tools": base["tools"],
         "gold_calls": [{"name": "add", "arguments": {"a": 17, "b": 25}}]},
        {"id": f"reg-{tag}-2", "split": "validation", "messages": base["messages"], "tools": base["tools"],
         "gold_text": True},
    ]
    with EnvClient(process_server.base_url) as client:
        assert client.register_tasks(FUNCTIONCALL, records) == [f"reg-{tag}-1", f"reg-{tag}-2"]
        validation = {t["id"] for t in client.tasks(FUNCTIONCALL, split="validation")["tasks"]}
        assert {f"reg-{tag}-1", f"reg-{tag}-2"} <= validation

        fresh = {**records[1], "id": f"reg-{tag}-3"}
        with pytest.raises(errors.DuplicateTask) as dup:
            client.register_tasks(FUNCTIONCALL, [fresh, records[0]])
        assert dup.value.task_id == f"reg-{tag}-1" and dup.value.code == "duplicate_task"

        broken = {"id": f"reg-{tag}-4", "messages": base["messages"]}  # no tools, no gold
        with pytest.raises(errors.ValidationFailed, match="task 1"):
            client.register_tasks(FUNCTIONCALL, [fresh, broken])
        # All or nothing: neither failed batch registered its good record.
        ids = {t["id"] for t in client.tasks(FUNCTIONCALL, limit=1000)["tasks"]}
        assert f"reg-{tag}-3" not in ids and f"reg-{tag}-4" not in ids

        # A registered task resets and scores like a built-in one.
        episode = client.reset(FUNCTIONCALL, f"reg-{tag}-1")
        assert client.step(episode.episode_id, gold_action("fc-math-001")).reward == 1.0


# --- one episode, every method ------------------------------------------------------------------
def test_episode_lifecycle(process_server: Any) -> None:
    with EnvClient(process_server.base_url) as client:
        reset = client.reset(FUNCTIONCALL, "fc-math-001", seed=7)
        assert isinstance(reset, ResetResult) and reset.episode_id.startswith("ep-")
        assert [m["role"] for m in reset.observation["messages"]] == ["system", "user"]
        assert reset.observation["tools"] == FUNCTIONCALL_TASKS["fc-math-001"]["tools"]
        assert reset.info["status"] == "ok" and live_count(client) == 1

        step = client.step(reset.episode_id, gold_action("fc-math-001"), mean_logprob=-0.25)
        assert isinstance(step, StepResult)
        assert (step.reward, step.terminated, step.truncated) == (1.0, True, False)
        assert step.info["reason"] == "answered" and step.info["status"] == "ok"
        assert step.info["reward_components"] == {"match": 1.0}
        assert step.as_tuple() == (step.observation, 1.0, True, False, step.info)

        state = client.episode(reset.episode_id)
        assert (state["turn"], state["status"], state["reason"], state["total_reward"]) == (1, "finished", "answered",
                                                                                           1.0)
        assert (state["task_id"], state["seed"], state["env_id"]) == ("fc-math-001", 7, FUNCTIONCALL)
        assert state["steps"][0]["reward"] == 1.0

        head, *steps = client.trajectory(reset.episode_id)
        assert head["turn"] is None and head["episode_id"] == reset.episode_id and head["seed"] == 7
        assert head["observation"] == reset.observation
        assert [(s["turn"], s["reward"]) for s in steps] == [(0, 1.0)]

        with pytest.raises(errors.EpisodeFinished) as finished:
            client.step(reset.episode_id, "again")
        assert finished.value.reason == "answered" and finished.value.episode_id == reset.episode_id

        client.close(reset.episode_id)
        client.close(reset.episode_id)  # closing an ended episode is a no-op
        assert live_count(client) == 0
        assert reset.episode_id in {e["episode_id"] for e in client.episodes(status="finished")["episodes"]}

        stats = {s["task_id"]: s for s in client.task_stats(FUNCTIONCALL)}
        assert stats["fc-math-001"]["episodes"] == 1 and stats["fc-math-001"]["finished"] == 1
        assert stats["fc-math-001"]["mean_return"] == 1.0 and stats["fc-math-001"]["success_rate"] == 1.0
        assert stats["fc-math-001"]["mean_logprob"] == -0.25


def test_multi_turn_episode_fork_and_close(process_server: Any) -> None:
    actions = reference_actions("tu-multi-2")  # three hops, then the answer
    rewards = reference_rewards("tu-multi-2")
    with EnvClient(process_server.base_url) as client:
        parent = client.reset(TOOLUSE, "tu-multi-2", seed=3)
        first = client.step(parent.episode_id, actions[0])
        second = client.step(parent.episode_id, actions[1])
        assert [first.reward, second.reward] == rewards[:2]
        assert second.info["metrics"]["solve_rate"] == pytest.approx(2 / 3)

        child = client.fork(parent.episode_id, turn=1)  # replays turn 0 in a new sandbox
        assert child.episode_id != parent.episode_id
        assert child.observation == first.observation and child.info == first.info
        state = client.episode(child.episode_id)
        assert (state["turn"], state["status"], state["task_id"]) == (1, "live", "tu-multi-2")
        replay = client.step(child.episode_id, actions[1])
        assert (replay.reward, replay.observation) == (second.reward, second.observation)

        here = client.fork(parent.episode_id)  # default: the current turn
        assert client.episode(here.episode_id)["turn"] == 2
        with pytest.raises(errors.ValidationFailed, match="turn"):
            client.fork(parent.episode_id, turn=5)
        assert live_count(client) == 3

        for episode_id in (parent.episode_id, child.episode_id, here.episode_id):
            client.close(episode_id)
        assert live_count(client) == 0
        assert client.episode(parent.episode_id)["reason"] == "closed"


# --- errors -------------------------------------------------------------------------------------
def test_request_errors_come_back_as_their_classes(process_server: Any) -> None:
    with EnvClient(process_server.base_url) as client:
        with pytest.raises(errors.EnvNotFound) as env_miss:
            client.reset("toolgym/tooluse-v0")
        assert env_miss.value.suggestion == "toolgym/ToolUse-v0" and env_miss.value.env_id == "toolgym/tooluse-v0"
        assert "did you mean 'toolgym/ToolUse-v0'" in str(env_miss.value)
        with pytest.raises(errors.EnvNotFound) as env_miss:
            client.tasks("toolgym/CodeMath-v1")
        assert env_miss.value.suggestion == "toolgym/CodeMath-v0"

        with pytest.raises(errors.TaskNotFound) as task_miss:
            client.reset(FUNCTIONCALL, "fc-nothing-999")
        assert task_miss.value.task_id == "fc-nothing-999"

        with pytest.raises(errors.EpisodeNotFound) as episode_miss:
            client.step("ep-000000-nothing", "hello")
        assert episode_miss.value.episode_id == "ep-000000-nothing"
        for call in (client.episode, client.trajectory, client.close, client.fork):
            with pytest.raises(errors.EpisodeNotFound):
                call("ep-000000-nothing")

        with pytest.raises(errors.ValidationFailed, match="verifier"):
            client.reset(FUNCTIONCALL, options={"verifier": "by-eye"})
        with pytest.raises(errors.ValidationFailed, match="unknown option"):
            client.reset(FUNCTIONCALL, options={"temperature": 0.7})
        with pytest.raises(errors.ValidationFailed, match="split"):
            client.reset(FUNCTIONCALL, "fc-math-001", options={"split": "test"})

        episode = client.reset(FUNCTIONCALL, "fc-math-001")
        with pytest.raises(errors.TurnMismatch) as mismatch:
            client.step(episode.episode_id, gold_action("fc-math-001"), expected_turn=3)
        assert (mismatch.value.turn, mismatch.value.expected_turn) == (0, 3)
        with pytest.raises(errors.ValidationFailed, match="not a valid action"):  # as the server's 422
            client.step(episode.episode_id, 42)
        client.close(episode.episode_id)
        assert live_count(client) == 0


def test_unauthorized_and_keys_scope_episodes(server_factory: Server) -> None:
    server = server_factory("process", api_keys=("key-alpha", "key-beta"))
    with EnvClient(server.base_url) as anonymous, EnvClient(server.base_url, "key-wrong") as wrong, \
            EnvClient(server.base_url, "key-alpha") as alpha, EnvClient(server.base_url, "key-beta") as beta:
        assert anonymous.health() == {"status": "ok"}  # liveness needs no key
        for client in (anonymous, wrong):
            with pytest.raises(errors.Unauthorized):
                client.envs()
            with pytest.raises(errors.Unauthorized):
                client.reset(FUNCTIONCALL)
        mine = alpha.reset(FUNCTIONCALL, "fc-math-001")
        with pytest.raises(errors.EpisodeNotFound):  # someone else's episode is no episode
            beta.step(mine.episode_id, gold_action("fc-math-001"))
        with pytest.raises(errors.EpisodeNotFound):
            beta.close(mine.episode_id)
        assert beta.episodes()["total"] == 0 and alpha.episodes(status="live")["total"] == 1
        assert alpha.step(mine.episode_id, gold_action("fc-math-001")).reward == 1.0
        alpha.close(mine.episode_id)


def test_payload_too_large(server_factory: Server) -> None:
    server = server_factory("process", max_action_chars=64, max_request_bytes=4096)
    with EnvClient(server.base_url) as client:
        episode = client.reset(FUNCTIONCALL, "fc-math-001")
        with pytest.raises(errors.PayloadTooLarge) as too_long:
            client.step(episode.episode_id, "x" * 65)
        assert too_long.value.max_action_chars == 64
        assert client.episode(episode.episode_id)["turn"] == 0  # refused, not played
        record = {"messages": [{"role": "user", "content": "q" * 5000}], "tools": [], "gold_text": True}
        with pytest.raises(errors.PayloadTooLarge, match="max_request_bytes"):
            client.register_tasks(FUNCTIONCALL, [record])
        assert client.step(episode.episode_id, "I can't help with that.").terminated
        client.close(episode.episode_id)


# --- 503: retried with backoff ------------------------------------------------------------------
def test_reset_at_capacity_retries_until_a_slot_frees(server_factory: Server) -> None:
    server = server_factory("process", max_live_episodes=1)
    wire = Recording()
    patient = RetryPolicy(max_retries=50, backoff_s=0.05, max_backoff_s=0.1)
    with EnvClient(server.base_url, transport=wire, retry=patient) as client, \
            EnvClient(server.base_url) as other:
        first = client.reset(FUNCTIONCALL, "fc-math-001")
        closer = threading.Timer(0.6, other.close, args=(first.episode_id,))
        started = time.monotonic()
        closer.start()
        try:
            second = client.reset(FUNCTIONCALL, "fc-math-002")
        finally:
            closer.join()
        waited = time.monotonic() - started
        assert 0.5 < waited < 10
        resets = [status for method, path, status in wire.log if (method, path) == ("POST", "/v1/episodes")]
        assert resets[0] == 201 and resets[-1] == 201
        assert len(resets) >= 4 and set(resets[1:-1]) == {503}  # backed off, then got the freed slot
        assert client.episode(second.episode_id)["status"] == "live"
        client.close(second.episode_id)


def test_reset_at_capacity_raises_when_retries_run_out(server_factory: Server) -> None:
    server = server_factory("process", max_live_episodes=1)
    wire = Recording()
    brief = RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=0.05)
    with EnvClient(server.base_url, transport=wire, retry=brief) as client:
        first = client.reset(FUNCTIONCALL)
        started = time.monotonic()
        with pytest.raises(errors.AtCapacity) as full:
            client.reset(FUNCTIONCALL)
        # Honouring the 2 s Retry-After twice would take >= 4 s; the caller capped the waits at 0.05 s.
        assert time.monotonic() - started < 3.5
        assert full.value.retryable and full.value.retry_after_s == 2.0
        assert "max_live_episodes" in str(full.value)
        assert [s for _, _, s in wire.log] == [201, 503, 503, 503]
        client.close(first.episode_id)


# --- idempotent steps ---------------------------------------------------------------------------
def test_a_step_resent_with_its_key_is_played_once(process_server: Any) -> None:
    actions = reference_actions("tu-parallel-1")
    with EnvClient(process_server.base_url) as client:
        episode = client.reset(TOOLUSE, "tu-parallel-1")
        half = tool_calls_text([{"name": "get_mountain", "arguments": {"name": "Mount Teryn"}}])
        once = client.step(episode.episode_id, half, idempotency_key="turn-0")
        again = client.step(episode.episode_id, half, idempotency_key="turn-0")
        assert once == again and once.reward == 1.0  # 2*1/(1+1); played twice it would be 0
        by_turn = client.step(episode.episode_id, half, expected_turn=0)  # an already played turn
        assert by_turn == once
        state = client.episode(episode.episode_id)
        assert state["turn"] == 1 and len(state["steps"]) == 1
        finish = client.step(episode.episode_id, actions[0], expected_turn=1)
        assert finish.reward == pytest.approx(2 * 1 / 3)  # one gold left of the two calls
        client.close(episode.episode_id)


def test_a_lost_step_answer_is_retried_without_acting_twice(process_server: Any) -> None:
    lossy = LoseFirstStepAnswer()
    actions = reference_actions("tu-multi-1")
    with EnvClient(process_server.base_url, transport=lossy) as client:
        episode = client.reset(TOOLUSE, "tu-multi-1")
        result = client.step(episode.episode_id, actions[0])
        assert lossy.lost is not None, "the first answer should have been dropped"
        assert len(lossy.step_keys) == 2 and lossy.step_keys[0] == lossy.step_keys[1]
        assert result.reward == lossy.lost["reward"] == 1.0 and result.observation == lossy.lost["observation"]
        state = client.episode(episode.episode_id)
        assert state["turn"] == 1 and state["total_reward"] == 1.0  # the server acted once
        assert client.step(episode.episode_id, actions[1]).reward == 1.0
        assert client.step(episode.episode_id, actions[2]).reward == 1.0
        assert client.episode(episode.episode_id)["turn"] == 3
        client.close(episode.episode_id)


def test_a_step_after_close_is_episode_finished(process_server: Any) -> None:
    """409 with the reason, not 404: the episode exists, it has ended (docs/architecture.md)."""
    with EnvClient(process_server.base_url) as client:
        episode = client.reset(FUNCTIONCALL, "fc-math-001")
        client.close(episode.episode_id)
        assert client.episode(episode.episode_id)["reason"] == "closed"
        with pytest.raises(errors.EpisodeFinished) as finished:
            client.step(episode.episode_id, gold_action("fc-math-001"))
        assert finished.value.reason == "closed"
