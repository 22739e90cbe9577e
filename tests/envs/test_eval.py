"""``toolgym eval``: policies over generated ToolUse tasks, through a real server's HTTP API.

The reference policy is the ceiling (Solve-F1 exactly 1 on every question type), the random
policy the floor, and the model policy talks to a real OpenAI-compatible HTTP endpoint (a
scripted one started here on loopback) whose expected metrics follow from FTRL's formulas:
precision S/N, recall S/U, F1 2S/(N+U) (FTRL, arXiv 2508.08791).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from toolgym.client import AsyncEnvClient, EnvClient
from toolgym.commands import eval as eval_command
from toolgym.eval import QUESTION_TYPES, EpisodeResult, format_table, summarize
from toolgym.taskgen import generate

ENV = "toolgym/ToolUse-v0"
REPO = Path(__file__).resolve().parents[2]


def run_eval(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``toolgym eval ARGV`` in this process: the command's own parser and ``run``."""
    parser = argparse.ArgumentParser(prog="toolgym")
    eval_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *argv])
    code = args.run(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's data rows by label: [episodes, P, R, F1, return, errors]."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) == 7 and cells[0] in (*QUESTION_TYPES, "overall", "unknown"):
            rows[cells[0]] = cells[1:]
    return rows


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def task_file(tmp_path: Path, seed: int, count: int, split: str | None = "test") -> tuple[Path, list[dict[str, Any]]]:
    """``count`` generated tasks in a JSONL file; ``split`` overrides the generator's split
    (so every task lands in the evaluated one), ``None`` keeps it."""
    records = list(generate(seed, count))
    if split is not None:
        for r in records:
            r["split"] = split
    path = tmp_path / f"tasks-{seed}-{count}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path, records


def golds(record: dict[str, Any]) -> int:
    return sum(len(v) for v in record["unsolved_set"].values())


# --- the table, without a server ------------------------------------------------------------------
def test_table_shows_all_four_question_types_and_keeps_errors_apart() -> None:
    results = [
        EpisodeResult("a", "test", "single_hop", rewards=[1.0, 1.0],
                      metrics={"solve_precision": 1.0, "solve_rate": 1.0, "solve_f1": 1.0}),
        EpisodeResult("b", "test", "single_hop", rewards=[0.0],
                      metrics={"solve_precision": 0.5, "solve_rate": 0.0, "solve_f1": 0.0}),
        EpisodeResult("c", "test", "multi_hop", error="SandboxError: gone"),
    ]
    rows = {r.label: r for r in summarize(results)}
    assert list(rows) == [*QUESTION_TYPES, "overall"]
    assert rows["single_hop"].episodes == 2 and rows["single_hop"].solve_precision == 0.75
    assert rows["single_hop"].mean_return == 1.0
    assert rows["multi_hop"].episodes == 0 and rows["multi_hop"].errors == 1 and rows["multi_hop"].solve_f1 is None
    assert rows["overall"].episodes == 2 and rows["overall"].errors == 1 and rows["overall"].solve_f1 == 0.5
    text = format_table(summarize(results))
    parsed = table_rows(text)
    assert set(parsed) == {*QUESTION_TYPES, "overall"}
    assert parsed["multi_hop"] == ["0", "-", "-", "-", "-", "1"]
    assert parsed["overall"] == ["2", "0.7500", "0.5000", "0.5000", "1.0000", "1"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_eval(["--policy", "reference"], capsys)
    assert code == 2 and "needs --tasks" in err
    code, _, err = run_eval(["--policy", "model"], capsys)
    assert code == 2 and "--model-url" in err


# --- registration and split selection (process backend: no Docker needed) ------------------------
def test_registers_only_missing_tasks_and_evaluates_exactly_the_split(
    server_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_factory("process")
    path, records = task_file(tmp_path, seed=3, count=60, split=None)  # the generator's own splits
    in_test = [r["id"] for r in records if r["split"] == "test"]
    assert in_test and len(in_test) < len(records)
    # Some of the file is on the server already: they are skipped, the rest registered.
    with EnvClient(server.base_url) as client:
        client.register_tasks(ENV, records[:7])
    out = tmp_path / "ref.jsonl"
    argv = ["--base-url", server.base_url, "--tasks", str(path), "--policy", "reference", "--split", "test",
            "--out", str(out)]
    code, stdout, stderr = run_eval(argv, capsys)
    assert code == 0, stderr
    assert "53 registered, 7 already on the server" in stderr
    episodes = read_jsonl(out)
    assert sorted(e["task_id"] for e in episodes) == sorted(in_test)  # no builtin, no other split
    assert table_rows(stdout)["overall"][0] == str(len(in_test))
    # A second run registers nothing and gives the same table.
    code, again, stderr = run_eval(argv, capsys)
    assert code == 0 and "0 registered, 60 already on the server" in stderr
    assert table_rows(again) == table_rows(stdout)
    # Without --tasks: every test task the server has (built-in ones too), types from its metadata.
    with EnvClient(server.base_url) as client:
        listed = client.tasks(ENV, "test", limit=1000)["tasks"]
    assert len(listed) > len(in_test)
    out = tmp_path / "server-split.jsonl"
    code, stdout, stderr = run_eval(["--base-url", server.base_url, "--policy", "random", "--out", str(out)], capsys)
    assert code == 0, stderr
    episodes = read_jsonl(out)
    assert sorted(e["task_id"] for e in episodes) == sorted(t["id"] for t in listed)
    assert {e["task_id"]: e["question_type"] for e in episodes} == {
        t["id"]: t["metadata"]["question_type"] for t in listed}


def test_duplicate_met_during_registration_is_skipped_per_record(server_factory: Any, tmp_path: Path) -> None:
    """The listing can be stale (another client registers meanwhile): a 409 for one record
    drops that record and resends the rest of its chunk."""
    from toolgym.eval import register_tasks

    server = server_factory("process")
    _, records = task_file(tmp_path, seed=4, count=12)
    with EnvClient(server.base_url) as client:
        client.register_tasks(ENV, [records[2], records[9]])

    async def register() -> tuple[list[str], list[str]]:
        async with AsyncEnvClient(server.base_url) as client:
            return await register_tasks(client, ENV, records, known=())

    registered, skipped = asyncio.run(register())
    assert sorted(skipped) == sorted([records[2]["id"], records[9]["id"]])
    assert sorted(registered) == sorted(r["id"] for i, r in enumerate(records) if i not in (2, 9))


def test_a_file_task_kept_in_another_split_is_refused(server_factory: Any, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    server = server_factory("process")
    path, records = task_file(tmp_path, seed=4, count=3)  # all in test
    with EnvClient(server.base_url) as client:
        client.register_tasks(ENV, [{**records[1], "split": "train"}])
    code, _, stderr = run_eval(["--base-url", server.base_url, "--tasks", str(path), "--policy", "reference"], capsys)
    assert code == 2 and records[1]["id"] in stderr and "another split" in stderr


def test_random_policy_is_seeded(server_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_factory("process")
    path, _ = task_file(tmp_path, seed=5, count=10)
    runs = []
    for seed in ("3", "3", "4"):
        out = tmp_path / f"random-{len(runs)}.jsonl"
        code, _, stderr = run_eval(["--base-url", server.base_url, "--tasks", str(path), "--policy", "random",
                                    "--seed", seed, "--out", str(out)], capsys)
        assert code == 0, stderr
        runs.append(sorted((e["task_id"], json.dumps(e["actions"]), e["metrics"]["solve_f1"])
                           for e in read_jsonl(out)))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_unreachable_model_endpoint_is_an_error_not_a_score(server_factory: Any, tmp_path: Path) -> None:
    from toolgym.eval import EvalTask, ModelPolicy, evaluate

    server = server_factory("process")
    _, records = task_file(tmp_path, seed=6, count=3)

    async def go() -> list[EpisodeResult]:
        policy = ModelPolicy(f"http://127.0.0.1:{free_port()}/v1", "nobody", max_retries=0)
        async with AsyncEnvClient(server.base_url) as client:
            await client.register_tasks(ENV, records)
            tasks = [EvalTask(r["id"], "test", r["question_type"], r) for r in records]
            try:
                return await evaluate(client, ENV, tasks, policy, concurrency=2)
            finally:
                await policy.aclose()

    results = asyncio.run(go())
    assert [r.task_id for r in results] == [r["id"] for r in records]
    assert all(r.error and "ModelEndpointError" in r.error and r.actions == [] for r in results)
    overall = summarize(results)[-1]
    assert (overall.episodes, overall.errors, overall.solve_f1) == (0, 3, None)
    assert server.manager.open_episodes == 0  # the failed episodes were closed, not left open


# --- Docker: the ceiling, the floor, a model endpoint, the CLI ------------------------------------
@pytest.mark.docker
def test_reference_policy_is_the_ceiling(server_factory: Any, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    server = server_factory("docker", warm_pool_size=4)
    path, records = task_file(tmp_path, seed=11, count=40)
    assert {r["question_type"] for r in records} == set(QUESTION_TYPES)
    out = tmp_path / "reference.jsonl"
    code, stdout, stderr = run_eval(["--base-url", server.base_url, "--tasks", str(path), "--policy", "reference",
                                     "--concurrency", "8", "--out", str(out)], capsys)
    assert code == 0, stderr
    rows = table_rows(stdout)
    for qtype in (*QUESTION_TYPES, "overall"):
        episodes, p, r, f1, _, errors = rows[qtype]
        assert int(episodes) > 0 and errors == "0", (qtype, rows[qtype])
        assert (p, r, f1) == ("1.0000", "1.0000", "1.0000"), (qtype, rows[qtype])
    assert rows["overall"][0] == "40"
    episodes = read_jsonl(out)
    assert len(episodes) == 40
    by_id = {r["id"]: r for r in records}
    for e in episodes:
        assert e["metrics"] == {"solve_precision": 1.0, "solve_rate": 1.0, "solve_f1": 1.0}, e["task_id"]
        assert e["question_type"] == by_id[e["task_id"]]["question_type"]
        assert e["reason"] == "answered" and e["terminated"] and e["error"] is None
        # Every reference turn solves all its calls; the gold answer scores 1/(1+0).
        assert e["rewards"][-1] == 1.0
        assert e["turns"] == len(by_id[e["task_id"]]["reference_solution"]) + 1


@pytest.mark.docker
def test_random_policy_is_the_floor(server_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_factory("docker", warm_pool_size=4)
    path, _ = task_file(tmp_path, seed=11, count=40)
    out = tmp_path / "random.jsonl"
    code, stdout, stderr = run_eval(["--base-url", server.base_url, "--tasks", str(path), "--policy", "random",
                                     "--seed", "7", "--out", str(out)], capsys)
    assert code == 0, stderr
    rows = table_rows(stdout)
    assert set(rows) == {*QUESTION_TYPES, "overall"}
    assert rows["overall"][0] == "40"
    assert float(rows["overall"][3]) < 0.2, stdout
    episodes = read_jsonl(out)
    assert all(e["error"] is None for e in episodes)
    assert any(len(e["actions"]) > 1 for e in episodes)  # it does call tools, not only answer


# --- a scripted OpenAI-compatible endpoint ---------------------------------------------------------
MODEL_KEY = "test-model-key"


class ScriptedModel:
    """``POST /v1/chat/completions`` on loopback that replays each task's reference calls.

    By the task's index in ``records`` it answers in one of three ways: ``structured``
    (OpenAI ``tool_calls``), ``tags`` (Qwen ``<tool_call>`` text in ``content``, as a model
    served without a tool parser does) or ``extra`` (structured, plus one call of a tool the
    task does not have in its first turn). It checks what a strict endpoint checks: the key,
    the model name, the tools, and that every tool message answers a call of an earlier
    assistant message. Its very first request gets a 503 (the policy must retry)."""

    MODES = ("structured", "tags", "extra")

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.by_question = {r["messages"][-1]["content"]: (i, r) for i, r in enumerate(records)}
        self.requests = 0
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def mode(self, index: int) -> str:
        return self.MODES[index % len(self.MODES)]

    def expected_metrics(self, record: dict[str, Any], index: int) -> dict[str, float]:
        u = golds(record)
        n = u + (1 if self.mode(index) == "extra" else 0)
        return {"solve_precision": u / n, "solve_rate": 1.0, "solve_f1": 2 * u / (n + u)}

    def reply(self, body: dict[str, Any], auth: str | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests += 1
            if self.requests == 1:
                return 503, {"error": {"message": "warming up"}}
        if auth != f"Bearer {MODEL_KEY}":
            return 401, {"error": {"message": "bad key"}}
        messages = body.get("messages") or []
        if body.get("model") != "scripted-1" or not body.get("tools"):
            self.problems.append("no model name or no tools")
            return 400, {"error": {"message": "model and tools required"}}
        answered: set[str] = set()
        for m in messages:
            if m.get("role") == "assistant":
                answered |= {c["id"] for c in m.get("tool_calls") or []}
            if m.get("role") == "tool" and m.get("tool_call_id") not in answered:
                self.problems.append(f"tool message answers unknown call {m.get('tool_call_id')!r}")
                return 400, {"error": {"message": "tool message without a matching tool call"}}
        user = next(m["content"] for m in messages if m.get("role") == "user")
        index, record = self.by_question[user]
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        turns = record["reference_solution"]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if turn >= len(turns):
            message["content"] = record["answer"]
        elif self.mode(index) == "tags":
            message["content"] = "Let me look that up.\n" + "\n".join(
                "<tool_call>" + json.dumps({"name": c["name"], "arguments": c["arguments"]}) + "</tool_call>"
                for c in turns[turn])
        else:
            calls = [{"id": f"chatcmpl-{turn}-{i}", "type": "function",
                      "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                     for i, c in enumerate(turns[turn])]
            if turn == 0 and self.mode(index) == "extra":
                calls.append({"id": "chatcmpl-extra", "type": "function",
                              "function": {"name": "no_such_tool", "arguments": "{}"}})
            message["tool_calls"] = calls
        return 200, {"id": "chatcmpl-1", "object": "chat.completion", "model": "scripted-1",
                     "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


@pytest.fixture
def scripted_model() -> Iterator[tuple[str, Any]]:
    """Yields ``(base_url, install)``; ``install(records)`` sets the script and returns it."""
    state: dict[str, ScriptedModel] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                status, payload = 404, {"error": {"message": "not found"}}
            else:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = state["model"].reply(body, self.headers.get("Authorization"))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def install(records: list[dict[str, Any]]) -> ScriptedModel:
        state["model"] = ScriptedModel(records)
        return state["model"]

    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", install
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.docker
def test_model_policy_against_an_openai_compatible_endpoint(
    server_factory: Any, scripted_model: tuple[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = server_factory("docker", warm_pool_size=4)
    path, records = task_file(tmp_path, seed=12, count=30)
    model_url, install = scripted_model
    model = install(records)
    monkeypatch.setenv("TOOLGYM_MODEL_API_KEY", MODEL_KEY)
    out = tmp_path / "model.jsonl"
    code, stdout, stderr = run_eval(["--base-url", server.base_url, "--tasks", str(path), "--policy", "model",
                                     "--model-url", model_url, "--model", "scripted-1", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert model.problems == []
    episodes = {e["task_id"]: e for e in read_jsonl(out)}
    assert len(episodes) == 30
    expected: dict[str, list[dict[str, float]]] = {q: [] for q in QUESTION_TYPES}
    for index, record in enumerate(records):
        e = episodes[record["id"]]
        want = model.expected_metrics(record, index)
        assert e["metrics"] == pytest.approx(want), (record["id"], model.mode(index))
        assert e["reason"] == "answered" and e["rewards"][-1] == 1.0
        expected[record["question_type"]].append(want)
        # The history sent back to the model carries the server's call ids.
        calls = [c for m in e["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or []]
        assert [c["id"] for c in calls] == [
            m["tool_call_id"] for m in e["messages"] if m["role"] == "tool"]
    rows = table_rows(stdout)
    for qtype, metrics in expected.items():
        if metrics:
            mean_f1 = sum(m["solve_f1"] for m in metrics) / len(metrics)
            assert rows[qtype][3] == f"{mean_f1:.4f}" and rows[qtype][0] == str(len(metrics))
    assert float(rows["overall"][3]) < 1.0  # the "extra" episodes lose precision, not recall
    assert rows["overall"][2] == "1.0000"


@pytest.mark.docker
def test_cli_end_to_end(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory("docker")
    path, _ = task_file(tmp_path, seed=13, count=12)
    out = tmp_path / "trajectories.jsonl"
    env = {**os.environ, "TOOLGYM_API_KEY": ""}
    argv = [sys.executable, "-m", "toolgym.cli", "eval", "--base-url", server.base_url, "--env", ENV,
            "--split", "test", "--tasks", str(path), "--policy", "reference", "--limit", "10",
            "--concurrency", "4", "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert set(QUESTION_TYPES) <= set(rows), proc.stdout
    assert rows["overall"][:4] == ["10", "1.0000", "1.0000", "1.0000"]
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10
    for line in lines:
        e = json.loads(line)
        assert {"task_id", "question_type", "messages", "actions", "observations", "rewards", "metrics"} <= set(e)
        assert e["messages"][0]["role"] == "system" and e["messages"][-1]["role"] == "assistant"
        assert len(e["actions"]) == len(e["observations"]) == len(e["rewards"])
