"""The served data loop (LoopTool, docs/methods.md#looptool) against live servers on loopback.

A scripted policy trains against a real server: it always solves some FunctionCall tasks and
reports a high mean log-probability, sometimes solves others with a low one, never solves a
third group. Then the server must class them (mastered / fragile / failing), keep mastered
tasks out of the frontier sampler, retire them, grow verified variants of the failing ones,
and put a label before a judge -- a real OpenAI-compatible HTTP endpoint started here, with
scripted replies, HTTP 500s, garbage and answers that never come.

``serve`` applies what ``create_app`` will do once the data loop is wired in (the router, the
judge in ``app.state.judge``, retirements marked at startup) to a server of ``server_factory``.
Nothing here needs Docker: FunctionCall needs no sandbox, and CodeMath's checks run in
math-verify worker processes.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from toolgym.server import dataloop
from toolgym.server.judge import (
    Judge,
    JudgeCase,
    Judgement,
    OpenAIJudge,
    Vote,
    build_judge,
    majority,
    parse_verdict,
)
from toolgym.server.judge import JudgeUnavailable as JudgeUnavailableError
from toolgym.server.routes import dataloop as dataloop_routes
from toolgym.server.settings import Settings

FC = "toolgym/FunctionCall-v0"
CM = "toolgym/CodeMath-v0"
TOOLS_URL = f"/v1/envs/{FC}/tasks"
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Seoul", "Quito", "Perth", "Dakar"]
SPARE = ["Madrid", "Nairobi", "Toronto", "Hanoi", "Bogota", "Accra", "Riga", "Lisbon", "Manila", "Denver"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name."}},
            "required": ["city"],
        },
    },
}
MASTERED = ["w-paris", "w-tokyo", "w-lima"]
FRAGILE = ["w-oslo", "w-cairo", "w-seoul"]
FAILING = ["w-quito", "w-perth", "w-dakar"]
TEXT_TASK = "w-text"


def weather_record(city: str) -> dict[str, Any]:
    return {
        "id": f"w-{city.lower()}",
        "messages": [{"role": "user", "content": f"What's the weather like in {city} right now?"}],
        "tools": [WEATHER],
        "gold_calls": [{"name": "get_weather", "arguments": {"city": city}}],
        "slots": [{"value": city, "alternatives": [c for c in CITIES + SPARE if c != city]}],
    }


def text_record() -> dict[str, Any]:
    return {
        "id": TEXT_TASK,
        "messages": [{"role": "user", "content": "Tell me a joke about clouds."}],
        "tools": [WEATHER],
        "gold_text": True,
    }


def call(city: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": "get_weather", "arguments": {"city": city}}) + "\n</tool_call>"


def city_of(observation: dict[str, Any]) -> str:
    match = re.search(r"weather like in (.+) right now", observation["messages"][-1]["content"])
    assert match, observation
    return match.group(1)


# --- a live server with the data loop wired in -------------------------------------------------------
def serve(server_factory: Callable[..., Any], judge: Judge | None = None, **settings: Any) -> Any:
    """A process-backend server with what app.py will add: the data-loop router, the judge
    in ``app.state.judge`` (assigned after create_app, as ``build_judge(settings)`` will be),
    and retirements marked after startup."""
    settings = {"load_builtin_tasks": False, "warm_pool_size": 0, **settings}
    server = server_factory("process", **settings)
    app = server.app
    if not any(getattr(r, "path", "").endswith("/tasks/expand") for r in app.routes):
        app.include_router(dataloop_routes.router)
    app.state.judge = judge
    dataloop.apply_retirements(app.state.manager.tasks, app.state.manager.store)
    return server


def client(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=60)


def register(http: httpx.Client, env_id: str, records: list[dict[str, Any]]) -> list[str]:
    r = http.post(f"/v1/envs/{env_id}/tasks", json={"tasks": records})
    assert r.status_code == 201, r.text
    return list(r.json()["ids"])


def play(http: httpx.Client, task_id: str, action: str, mean_logprob: float | None = None,
         options: dict[str, Any] | None = None) -> float:
    r = http.post("/v1/episodes", json={"env_id": FC, "task_id": task_id, "options": options or {}})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = {"action": action}
    if mean_logprob is not None:
        body["mean_logprob"] = mean_logprob
    s = http.post(f"/v1/episodes/{r.json()['episode_id']}/step", json=body)
    assert s.status_code == 200, s.text
    assert s.json()["terminated"]
    return float(s.json()["reward"])


def train(http: httpx.Client, epochs: int = 4) -> None:
    """The scripted policy: masters MASTERED (confident), solves FRAGILE three times in four
    (unsure), never solves FAILING."""
    for epoch in range(epochs):
        for tid in MASTERED:
            assert play(http, tid, call(tid[2:].title()), mean_logprob=-0.05) == 1.0
        for tid in FRAGILE:
            solve = epoch != 1
            city = tid[2:].title() if solve else "Atlantis"
            assert play(http, tid, call(city), mean_logprob=-1.6) == (1.0 if solve else 0.0)
        for tid in FAILING:
            assert play(http, tid, call("Atlantis"), mean_logprob=-0.3) == 0.0


def stats(http: httpx.Client) -> dict[str, str]:
    r = http.get(f"/v1/envs/{FC}/tasks/stats")
    assert r.status_code == 200, r.text
    return {t["task_id"]: t["status"] for t in r.json()["tasks"]}


def listing(http: httpx.Client, env_id: str = FC) -> dict[str, dict[str, Any]]:
    r = http.get(f"/v1/envs/{env_id}/tasks", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return {t["id"]: t for t in r.json()["tasks"]}


def draw(http: httpx.Client, seed: int, sampler: str) -> str:
    r = http.post("/v1/episodes", json={"env_id": FC, "seed": seed, "options": {"sampler": sampler}})
    assert r.status_code == 201, r.text
    episode_id = r.json()["episode_id"]
    task_id = str(http.get(f"/v1/episodes/{episode_id}").json()["task_id"])
    assert http.delete(f"/v1/episodes/{episode_id}").status_code == 204
    return task_id


@pytest.fixture
def trained(server_factory: Callable[..., Any]) -> Iterator[tuple[Any, httpx.Client]]:
    server = serve(server_factory)
    with client(server) as http:
        register(http, FC, [weather_record(c) for c in CITIES] + [text_record()])
        train(http)
        yield server, http


# --- GCP: stats, the frontier sampler, retirement ---------------------------------------------------
def test_training_run_classes_tasks_and_frontier_skips_mastered(trained: tuple[Any, httpx.Client]) -> None:
    _, http = trained
    classes = stats(http)
    assert {t: classes[t] for t in MASTERED} == dict.fromkeys(MASTERED, "mastered")
    assert {t: classes[t] for t in FRAGILE} == dict.fromkeys(FRAGILE, "fragile")
    assert {t: classes[t] for t in FAILING} == dict.fromkeys(FAILING, "failing")
    assert classes[TEXT_TASK] == "unseen"

    drawn = [draw(http, seed, "frontier") for seed in range(50)]
    assert not set(drawn) & set(MASTERED)
    assert set(drawn) & set(FAILING) and set(drawn) & set(FRAGILE)
    assert drawn == [draw(http, seed, "frontier") for seed in range(50)], "seeded draws must repeat"


def test_retire_mastered_tasks(trained: tuple[Any, httpx.Client]) -> None:
    _, http = trained
    r = http.post(f"/v1/envs/{FC}/tasks/retire", json={"status": "mastered"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["retired"]) == sorted(MASTERED) and r.json()["already_retired"] == []
    again = http.post(f"/v1/envs/{FC}/tasks/retire", json={"task_ids": [MASTERED[0], FAILING[0]]}).json()
    assert again == {"retired": [FAILING[0]], "already_retired": [MASTERED[0]]}

    tasks = listing(http)
    assert all(tasks[t]["metadata"].get("retired") is True for t in [*MASTERED, FAILING[0]])
    assert not any(tasks[t]["metadata"].get("retired") for t in [*FRAGILE, *FAILING[1:]])
    # Still resettable by id, still scored.
    assert play(http, MASTERED[0], call("Paris")) == 1.0
    drawn = {draw(http, seed, "frontier") for seed in range(50)}
    assert not drawn & {*MASTERED, FAILING[0]}

    back = http.post(f"/v1/envs/{FC}/tasks/unretire", json={"task_ids": [FAILING[0], FRAGILE[0]]}).json()
    assert back == {"unretired": [FAILING[0]], "not_retired": [FRAGILE[0]]}
    assert "retired" not in listing(http)[FAILING[0]]["metadata"]


def test_retire_requests_are_checked(trained: tuple[Any, httpx.Client]) -> None:
    _, http = trained
    both = http.post(f"/v1/envs/{FC}/tasks/retire", json={"status": "mastered", "task_ids": ["w-paris"]})
    neither = http.post(f"/v1/envs/{FC}/tasks/retire", json={})
    unknown = http.post(f"/v1/envs/{FC}/tasks/retire", json={"task_ids": ["w-paris", "nope"]})
    assert both.status_code == neither.status_code == 422
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "task_not_found"
    assert "retired" not in listing(http)["w-paris"]["metadata"], "a 404 retires nothing"


def test_uniform_sampler_skips_retired_tasks(trained: tuple[Any, httpx.Client]) -> None:
    _, http = trained
    retired = [*MASTERED, *FRAGILE]
    assert http.post(f"/v1/envs/{FC}/tasks/retire", json={"task_ids": retired}).status_code == 200
    assert not {draw(http, seed, "uniform") for seed in range(50)} & set(retired)


def test_every_task_retired_is_a_clear_422(server_factory: Callable[..., Any]) -> None:
    server = serve(server_factory)
    with client(server) as http:
        ids = register(http, FC, [weather_record("Paris"), weather_record("Lima")])
        http.post(f"/v1/envs/{FC}/tasks/retire", json={"task_ids": ids}).raise_for_status()
        r = http.post("/v1/episodes", json={"env_id": FC, "options": {"sampler": "frontier"}})
        assert r.status_code == 422 and "retired" in r.json()["error"]["message"]


def test_retirement_and_variants_survive_a_restart(server_factory: Callable[..., Any], tmp_path: Any) -> None:
    db = str(tmp_path / "loop.db")
    first = serve(server_factory, db_path=db)
    with client(first) as http:
        register(http, FC, [weather_record(c) for c in CITIES])
        http.post(f"/v1/envs/{FC}/tasks/retire", json={"task_ids": ["w-paris"]}).raise_for_status()
        created = http.post(f"/v1/envs/{FC}/tasks/expand", json={"task_ids": ["w-lima"], "seed": 3}).json()["created"]
        assert created
    second = serve(server_factory, db_path=db)
    with client(second) as http:
        tasks = listing(http)
        assert tasks["w-paris"]["metadata"]["retired"] is True
        assert all(tasks[t]["metadata"]["parent_id"] == "w-lima" for t in created)
        assert "w-paris" not in {draw(http, seed, "frontier") for seed in range(30)}


# --- EDDE: expansion ------------------------------------------------------------------------------------
def test_expansion_grows_verified_variants_of_failing_tasks(trained: tuple[Any, httpx.Client]) -> None:
    _, http = trained
    before = listing(http)
    r = http.post(f"/v1/envs/{FC}/tasks/expand", json={"seed": 7})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["seed"] == 7 and out["skipped"] == []
    assert out["created"] and len(out["created"]) + out["rejected"] == 3 * len(FAILING)
    after = listing(http)
    seen_questions = set()
    for tid in before:
        if tid != TEXT_TASK:
            seen_questions.add(http.post("/v1/episodes", json={"env_id": FC, "task_id": tid}).json()
                               ["observation"]["messages"][-1]["content"])
    for tid in out["created"]:
        meta = after[tid]["metadata"]
        assert meta["parent_id"] in FAILING and tid.startswith(meta["parent_id"] + "~")
        assert after[tid]["split"] == "train"
        # Registered, resettable, and its gold scores 1 under both verifiers; the policy's
        # old mistake still scores 0.
        reset = http.post("/v1/episodes", json={"env_id": FC, "task_id": tid}).json()
        question = reset["observation"]["messages"][-1]["content"]
        assert question not in seen_questions, "a variant must not repeat an existing task"
        seen_questions.add(question)
        city = city_of(reset["observation"])
        for verifier in ("looptool", "bfcl"):
            assert play(http, tid, call(city), options={"verifier": verifier}) == 1.0
        assert play(http, tid, call("Atlantis")) == 0.0


def test_expansion_is_deterministic_by_seed(server_factory: Callable[..., Any]) -> None:
    results = []
    for _ in range(2):
        server = serve(server_factory)
        with client(server) as http:
            register(http, FC, [weather_record(c) for c in CITIES])
            body = {"task_ids": FAILING, "n": 3, "seed": 11}
            first = http.post(f"/v1/envs/{FC}/tasks/expand", json=body).json()
            again = http.post(f"/v1/envs/{FC}/tasks/expand", json=body).json()
            other = http.post(f"/v1/envs/{FC}/tasks/expand", json={**body, "seed": 12}).json()
            results.append(first)
            assert len(first["created"]) + first["rejected"] == 3 * len(FAILING)
            # A variant may rebuild an existing task (Quito -> Paris): that is no new task.
            assert all(r["reason"].startswith("duplicate") for r in first["rejections"])
            # The same seed again proposes the same variants: all duplicates, none added.
            assert again["created"] == [] and again["rejected"] == 3 * len(FAILING)
            assert all(r["reason"].startswith("duplicate") for r in again["rejections"])
            assert set(other["created"]).isdisjoint(first["created"])
    assert results[0] == results[1] and len(results[0]["created"]) >= len(FAILING)


def test_expansion_skips_tasks_without_variants_and_refuses_families_without_them(
    server_factory: Callable[..., Any],
) -> None:
    server = serve(server_factory)
    with client(server) as http:
        register(http, FC, [weather_record("Paris"), text_record()])
        r = http.post(f"/v1/envs/{FC}/tasks/expand", json={"task_ids": [TEXT_TASK, "w-paris"], "n": 2, "seed": 1})
        assert r.status_code == 200, r.text
        assert r.json()["skipped"] == [TEXT_TASK] and len(r.json()["created"]) == 2
        nothing = http.post(f"/v1/envs/{FC}/tasks/expand", json={}).json()  # no failing task yet
        assert nothing["created"] == [] and nothing["skipped"] == []
        tooluse = http.post("/v1/envs/toolgym/ToolUse-v0/tasks/expand", json={})
        assert tooluse.status_code == 422
        assert "variants" in tooluse.json()["error"]["message"]
        missing = http.post(f"/v1/envs/{FC}/tasks/expand", json={"task_ids": ["nope"]})
        assert missing.status_code == 404
        bad = http.post(f"/v1/envs/{FC}/tasks/expand", json={"n": 0})
        assert bad.status_code == 422


def test_codemath_expansion_verifies_gold_with_math_verify(server_factory: Callable[..., Any]) -> None:
    server = serve(server_factory)
    with client(server) as http:
        ids = register(http, CM, [
            {"id": "gcd-1", "question": "Find the greatest common divisor of 12 and 18.", "answer": "6",
             "source": "reasoning_gym/gcd", "split": "validation"},
            {"id": "own-1", "question": "What is 2 + 2?", "answer": "4"},
        ])
        r = http.post(f"/v1/envs/{CM}/tasks/expand", json={"task_ids": ids, "n": 2, "seed": 5})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["skipped"] == ["own-1"] and len(out["created"]) == 2
        tasks = listing(http, CM)
        for tid in out["created"]:
            assert tasks[tid]["split"] == "validation"
            assert tasks[tid]["metadata"]["parent_id"] == "gcd-1"
            assert tasks[tid]["metadata"]["family"] == "gcd"
            task = server.manager.tasks.get(CM, tid)
            family = server.manager.tasks.family(CM)
            assert family.verifier.verify(task.record["answer"], task.record["answer"]).correct


# --- JGLV: the judge --------------------------------------------------------------------------------
@dataclass
class FakeJudgeEndpoint:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 whose reply depends on the
    requested model: ("reply", text), ("status", code), ("garbage", body), ("hang", seconds)."""

    behaviours: dict[str, tuple[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def _handler(endpoint: FakeJudgeEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a timed-out vote)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            endpoint.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            kind, value = endpoint.behaviours.get(body.get("model"), ("status", 404))
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": "no such route"}')
            elif kind == "reply":
                reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": value},
                                      "finish_reason": "stop"}]}
                self._send(200, json.dumps(reply).encode())
            elif kind == "status":
                self._send(int(value), b'{"error": {"message": "the model crashed"}}')
            elif kind == "garbage":
                self._send(200, str(value).encode(), "text/plain")
            elif kind == "hang":
                time.sleep(float(value))
                self._send(200, b"{}")

    return Handler


@pytest.fixture
def judge_endpoint() -> Iterator[FakeJudgeEndpoint]:
    endpoint = FakeJudgeEndpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
    server.daemon_threads = True
    endpoint.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def reply(verdict: str) -> tuple[str, str]:
    return ("reply", f"<think>Compare the cities.</think>\n{verdict}.\nError Analysis: the city is wrong.")


WRONG = call("Atlantis")


@pytest.fixture
def judged(
    server_factory: Callable[..., Any], judge_endpoint: FakeJudgeEndpoint
) -> Iterator[tuple[Any, httpx.Client, FakeJudgeEndpoint]]:
    judge = build_judge(Settings(judge_base_url=judge_endpoint.base_url, judge_model="m1,m2,m3", judge_votes=3,
                                 judge_timeout_s=1.0, judge_api_key="sk-judge-test"))
    server = serve(server_factory, judge=judge)
    with client(server) as http:
        register(http, FC, [weather_record("Paris"), text_record()])
        yield server, http, judge_endpoint


def judge_url(task_id: str = "w-paris") -> str:
    return f"/v1/envs/{FC}/tasks/{task_id}/judge"


def test_judge_majority_and_actions(judged: tuple[Any, httpx.Client, FakeJudgeEndpoint]) -> None:
    _, http, endpoint = judged
    cases = [
        (("RESPONSE1_INCORRECT", "RESPONSE1_INCORRECT", "BOTH_CORRECT"), "RESPONSE1_INCORRECT", "relabel_suggested"),
        (("RESPONSE2_INCORRECT", "RESPONSE2_INCORRECT", "RESPONSE2_INCORRECT"), "RESPONSE2_INCORRECT", "keep"),
        (("BOTH_INCORRECT", "RESPONSE2_INCORRECT", "BOTH_INCORRECT"), "BOTH_INCORRECT", "drop_suggested"),
        (("BOTH_CORRECT", "BOTH_CORRECT", "BOTH_INCORRECT"), "BOTH_CORRECT", "keep"),
        (("BOTH_CORRECT", "RESPONSE1_INCORRECT", "BOTH_INCORRECT"), "no_consensus", "keep"),
    ]
    for verdicts, verdict, action in cases:
        endpoint.behaviours = {f"m{i + 1}": reply(v) for i, v in enumerate(verdicts)}
        r = http.post(judge_url(), json={"response": WRONG})
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["verdict"], out["action"], out["judged_by"]) == (verdict, action, "judge")
        assert [v["verdict"] for v in out["votes"]] == list(verdicts)
        assert [v["model"] for v in out["votes"]] == ["m1", "m2", "m3"]

    # What the judge was shown: the label as Response 1, the policy's answer as Response 2.
    sent = endpoint.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-judge-test"
    user = sent["body"]["messages"][-1]["content"]
    assert user.index(call("Paris")) < user.index("Response 2") < user.index(WRONG)
    assert "Paris right now" in user and "get_weather" in sent["body"]["messages"][0]["content"]


def test_judge_is_not_asked_when_the_answer_already_scores(
    judged: tuple[Any, httpx.Client, FakeJudgeEndpoint],
) -> None:
    _, http, endpoint = judged
    endpoint.behaviours = {m: reply("BOTH_INCORRECT") for m in ("m1", "m2", "m3")}
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    for response in (call("Paris"), message):
        out = http.post(judge_url(), json={"response": response}).json()
        assert out == {"verdict": "BOTH_CORRECT", "votes": [], "action": "keep", "judged_by": "verifier"}
    text = http.post(judge_url(TEXT_TASK), json={"response": "Why did the cloud break up? Too much drizzle."})
    assert text.json()["judged_by"] == "verifier"
    assert endpoint.requests == []


def test_judge_degrades_cleanly(judged: tuple[Any, httpx.Client, FakeJudgeEndpoint]) -> None:
    _, http, endpoint = judged
    failures: list[dict[str, tuple[str, Any]]] = [
        {"m1": ("status", 500), "m2": ("garbage", "<html>bad gateway</html>"), "m3": ("hang", 5)},
        {m: ("status", 503) for m in ("m1", "m2", "m3")},
        {m: ("reply", "I think the first one, maybe.") for m in ("m1", "m2", "m3")},
        {m: ("reply", "[RESPONSE1_INCORRECT/RESPONSE2_INCORRECT/BOTH_CORRECT/BOTH_INCORRECT]")
         for m in ("m1", "m2", "m3")},
        {"m1": reply("BOTH_CORRECT"), "m2": ("hang", 5), "m3": ("status", 500)},
    ]
    for behaviours in failures:
        endpoint.behaviours = behaviours
        started = time.monotonic()
        r = http.post(judge_url(), json={"response": WRONG})
        assert time.monotonic() - started < 4, "a hanging judge must be cut at judge_timeout_s"
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "judge_unavailable" and error["retryable"] is True
        assert int(r.headers["Retry-After"]) >= 1
        assert len(error["details"]["votes"]) == 3
    assert http.get("/healthz").status_code == 200

    # Two votes agree, one times out: the majority stands and the failed vote is reported.
    endpoint.behaviours = {"m1": reply("BOTH_INCORRECT"), "m2": ("hang", 5), "m3": reply("BOTH_INCORRECT")}
    out = http.post(judge_url(), json={"response": WRONG}).json()
    assert out["verdict"] == "BOTH_INCORRECT" and out["action"] == "drop_suggested"
    assert [v["error"] for v in out["votes"]] == [None, "timeout", None]


def test_judge_unreachable_unconfigured_and_unsupported(
    server_factory: Callable[..., Any], judge_endpoint: FakeJudgeEndpoint,
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = OpenAIJudge(f"http://127.0.0.1:{port}/v1", "m1", votes=2, timeout_s=2.0)
    server = serve(server_factory, judge=down)
    with client(server) as http:
        register(http, FC, [weather_record("Paris")])
        r = http.post(judge_url(), json={"response": WRONG})
        assert r.status_code == 503 and r.json()["error"]["code"] == "judge_unavailable"
        assert {v["error"] for v in r.json()["error"]["details"]["votes"]} == {"unreachable"}
        tooluse = http.post("/v1/envs/toolgym/ToolUse-v0/tasks/x/judge", json={"response": "hi"})
        assert tooluse.status_code == 422 and "cannot be judged" in tooluse.json()["error"]["message"]
        assert http.post(judge_url("nope"), json={"response": WRONG}).status_code == 404
        server.app.state.judge = None
        none = http.post(judge_url(), json={"response": WRONG})
        assert none.status_code == 422 and none.json()["error"]["code"] == "judge_not_configured"
        assert "judge_base_url" in none.json()["error"]["message"]


def test_the_judge_key_is_a_setting_read_from_the_environment_and_never_shown(
    server_factory: Callable[..., Any], judge_endpoint: FakeJudgeEndpoint, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TOOLGYM_JUDGE_API_KEY`` is the setting ``judge_api_key``: ``Settings.from_env`` reads
    it like every other knob, ``create_app`` hands it to the judge (no second look at the
    process environment), and neither the settings' nor the judge's repr shows it."""
    monkeypatch.delenv("TOOLGYM_JUDGE_API_KEY", raising=False)
    from_env = Settings.from_env({
        "TOOLGYM_JUDGE_API_KEY": "sk-judge-env", "TOOLGYM_JUDGE_BASE_URL": judge_endpoint.base_url,
        "TOOLGYM_JUDGE_MODEL": "m1,m2", "TOOLGYM_JUDGE_VOTES": "2",
    })
    assert from_env.judge_api_key == "sk-judge-env"
    assert "sk-judge-env" not in repr(from_env)
    server = server_factory("process", load_builtin_tasks=False, warm_pool_size=0,
                            judge_base_url=from_env.judge_base_url, judge_model=from_env.judge_model,
                            judge_votes=from_env.judge_votes, judge_api_key=from_env.judge_api_key)
    assert "sk-judge-env" not in repr(server.app.state.judge)
    judge_endpoint.behaviours = {"m1": reply("BOTH_INCORRECT"), "m2": reply("BOTH_INCORRECT")}
    with client(server) as http:
        register(http, FC, [weather_record("Paris")])
        r = http.post(judge_url(), json={"response": WRONG})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "BOTH_INCORRECT"
    assert [q["auth"] for q in judge_endpoint.requests] == ["Bearer sk-judge-env"] * 2


class _BrokenJudge:
    async def judge(self, case: JudgeCase) -> Judgement:
        raise RuntimeError("the plug-in judge has a bug")


def test_a_plugin_judge_that_raises_is_a_503(server_factory: Callable[..., Any]) -> None:
    server = serve(server_factory, judge=_BrokenJudge())
    with client(server) as http:
        register(http, FC, [weather_record("Paris")])
        r = http.post(judge_url(), json={"response": WRONG})
        assert r.status_code == 503 and r.json()["error"]["code"] == "judge_unavailable"
        assert http.get("/healthz").status_code == 200


# --- the judge's pure parts -------------------------------------------------------------------------
def test_parse_verdict() -> None:
    assert parse_verdict("BOTH_CORRECT.\nError Analysis: none.") == "BOTH_CORRECT"
    assert parse_verdict("<think>RESPONSE1_INCORRECT? no</think>\n\nresponse2_incorrect") == "RESPONSE2_INCORRECT"
    later = "Verdict below.\nRESPONSE1_INCORRECT. The label names the wrong city."
    assert parse_verdict(later) == "RESPONSE1_INCORRECT"
    assert parse_verdict("RESPONSE1_INCORRECT/RESPONSE2_INCORRECT") is None
    assert parse_verdict("BOTH_INCORRECT.\nCorrect Approach: unlike BOTH_CORRECT ...") == "BOTH_INCORRECT"
    assert parse_verdict("") is None and parse_verdict("no idea") is None


def test_majority_rule() -> None:
    def votes(*verdicts: Any) -> list[Vote]:
        return [Vote(v, None if v else "timeout") for v in verdicts]

    assert majority(votes("BOTH_CORRECT", "BOTH_CORRECT"), 2).verdict == "BOTH_CORRECT"
    assert majority(votes("BOTH_CORRECT", "BOTH_INCORRECT"), 2).verdict == "no_consensus"
    assert majority(votes("BOTH_CORRECT", "BOTH_CORRECT", None), 3).verdict == "BOTH_CORRECT"
    assert majority(votes("BOTH_CORRECT", "BOTH_CORRECT", "BOTH_CORRECT", None), 4).verdict == "BOTH_CORRECT"
    with pytest.raises(JudgeUnavailableError):
        majority(votes("BOTH_CORRECT", None), 2)
    with pytest.raises(JudgeUnavailableError):
        majority(votes("BOTH_CORRECT", "BOTH_INCORRECT", None), 3)
    with pytest.raises(ValueError):
        OpenAIJudge("http://127.0.0.1:1/v1", "m", votes=1)
    assert build_judge(Settings(judge_model="m")) is None
