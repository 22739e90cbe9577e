"""The LLM-driven generator against a real HTTP endpoint on loopback.

The endpoint is a small OpenAI-compatible server started by the tests (stdlib
``http.server`` on 127.0.0.1, a thread per request): ``POST /v1/chat/completions`` answers
with a *scripted model* that reads the stage's JSON input and writes a correct reply — a
question from the catalog, tool documents, merges, scaling choices, and Python source.
Faults are injected per stage: malformed JSON, a wrong gold, broken code, slow replies,
HTTP 500/429/401, a garbage envelope. Model-written code is verified in real sandboxes
(process backend; Docker in the test marked ``docker``), never in this process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from toolgym.envs.runner import RunRequest, RunResult
from toolgym.server.sandbox.base import SandboxBackend, SandboxSpec
from toolgym.taskgen import ScalingKnobs, verify_in_sandbox
from toolgym.taskgen.llm import (
    ChatClient,
    LLMConfig,
    LLMConfigError,
    LLMReport,
    LLMStages,
    LLMUnavailable,
    ReplyError,
    generate_with_llm,
    parse_json_reply,
)

MARKER = "# written by the scripted model"
ALL_OPS = replace(ScalingKnobs(), p_functional_generalization=1.0, p_parameter_expansion=1.0,
                  p_type_generalization=1.0, p_toolset_extension=1.0)
VENV_BIN = Path(sys.executable).parent


# --- the scripted model ----------------------------------------------------------------------

def _is_relation(meaning: str) -> bool:
    return "(relation:" in meaning


def _decompose(inp: dict[str, Any]) -> dict[str, Any]:
    facts = inp["facts"]
    by_name = {f["name"]: f for f in facts}
    relation = {(k, a) for k, attrs in inp["attributes"].items() for a, m in attrs.items() if _is_relation(m)}
    taken: set[tuple[str, str]] = set()

    def extend(fact: dict[str, Any], left: int, visited: list[str]) -> list[tuple[str, str, Any]] | None:
        for attr, value in fact["attributes"].items():
            if (fact["name"], attr) in taken:
                continue
            if left == 1:
                return [(fact["name"], attr, value)]
            if (fact["kind"], attr) in relation and value in by_name and value not in visited:
                rest = extend(by_name[value], left - 1, [*visited, value])
                if rest:
                    return [(fact["name"], attr, value), *rest]
        return None

    chains = []
    for length in inp["chains"]:
        for fact in facts:
            chain = extend(fact, length, [fact["name"]])
            if chain:
                taken.update((e, a) for e, a, _ in chain)
                chains.append(chain)
                break
    parts = []
    for chain in chains:
        phrase = chain[0][0]
        for _, attr, _ in chain[:-1]:
            phrase = f"the {attr.replace('_', ' ')} of {phrase}"
        parts.append(f"What is the {chain[-1][1].replace('_', ' ')} of {phrase}?")
    return {"question": " ".join(parts), "chains": [
        [{"sub_question": f"What is the {a.replace('_', ' ')} of {e}?", "entity": e, "attribute": a, "answer": v}
         for e, a, v in chain] for chain in chains]}


def _doc(name: str, kind: str, attr: str) -> dict[str, Any]:
    param = f"{kind}_name"
    return {"name": name, "description": f"Look up the {attr.replace('_', ' ')} of a {kind}.",
            "parameters": {"type": "object", "required": [param], "properties": {
                param: {"type": "string", "description": f"The {kind}'s name."}}}}


def _documents(inp: dict[str, Any]) -> dict[str, Any]:
    return {"tools": [_doc(f"get_{sq['kind']}_{sq['attribute']}", sq["kind"], sq["attribute"])
                      for sq in inp["sub_questions"]]}


def _integrate(inp: dict[str, Any]) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in inp["documents"]:
        by_kind.setdefault(d["kind"], []).append(d)
    tools = []
    for kind, docs in by_kind.items():
        attrs = {d["attribute"] for d in docs}
        tools.append({"name": docs[0]["name"] if len(attrs) == 1 else f"lookup_{kind}_record",
                      "description": f"Look up a {kind}.", "documents": [d["index"] for d in docs],
                      "field_parameter": None if len(attrs) == 1 else {"name": "field"}})
    return {"tools": tools}


def _scale(inp: dict[str, Any]) -> dict[str, Any]:
    ops = inp["operations"]
    out: dict[str, Any] = {}
    if "functional_generalization" in ops:
        tool = ops["functional_generalization"]["candidates"][0]
        out["functional_generalization"] = {"tool": tool, "name": f"{tool}_profile",
                                            "description": "Look up any attribute."}
    if "parameter_expansion" in ops:
        out["parameter_expansion"] = [{"tool": ops["parameter_expansion"]["candidates"][0], "parameters": [
            {"name": "verbose", "type": "boolean", "description": "More detail.", "default": False},
            {"name": "units", "type": "string", "description": "Units.", "default": "metric",
             "enum": ["metric", "imperial"]}]}]
    if "type_generalization" in ops:
        cand = ops["type_generalization"]["candidates"][0]
        out["type_generalization"] = {"tool": cand["tool"], "parameter": cand["parameter"],
                                      "type": cand["types"][len(cand["tool"]) % len(cand["types"])]}
    if "toolset_extension" in ops:
        out["toolset_extension"] = [_doc(f"find_{x['kind']}_{x['attribute']}", x["kind"], x["attribute"])
                                    for x in ops["toolset_extension"]["lookups"]]
    return out


_TEMPLATE = '''def {name}({signature}):
    {marker}
    records = {records!r}
    if unexpected:
        raise TypeError("unexpected argument; see the schema")
    key = {key}
    if key is None:
        raise TypeError("missing required argument '{key}'")
    if isinstance(key, dict):
        key = key.get("name")
    names = key if isinstance(key, list) else [key]
    wanted = {wanted}
    if wanted is None:
        wanted = {default!r}
    fields = wanted if isinstance(wanted, list) else [wanted]
    index = {{" ".join(k.split()).casefold(): v for k, v in records.items()}}
    values = []
    for raw in names:
        if not isinstance(raw, str):
            raise TypeError("names must be strings")
        record = index.get(" ".join(raw.split()).casefold())
        if record is None:
            raise LookupError("no record matches the given name")
        for f in fields:
            if f not in record:
                raise ValueError("unknown field")
            values.append(record[f])
    value = values[0] if len(values) == 1 else values
    {answer}
'''


def _deploy(inp: dict[str, Any]) -> dict[str, Any]:
    tool = inp["tool"]
    params = list(tool["parameters"]["properties"])
    fmt = inp["answer_format"]
    if fmt.startswith('return a dict {"'):
        answer = "return {{{!r}: value}}".format(fmt.split('"')[1])
    elif "Result:" in fmt:
        answer = "return 'Result: ' + str(value)"
    else:
        answer = "return value"
    field_param = inp["field_parameter"]
    code = _TEMPLATE.format(
        name=tool["name"], signature=", ".join([f"{p}=None" for p in params] + ["**unexpected"]), marker=MARKER,
        records=inp["records"], key=inp["entity_parameter"]["name"],
        wanted=field_param["name"] if field_param else "None", default=inp["fields"][0], answer=answer)
    return {"code": code}


ORACLE: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "decompose": _decompose, "documents": _documents, "integrate": _integrate, "scale": _scale, "deploy": _deploy,
}


# --- the endpoint ------------------------------------------------------------------------------

@dataclass
class Fault:
    stage: str
    kind: str
    times: int = 1
    when: Callable[[dict[str, Any]], bool] = lambda inp: True


@dataclass
class Endpoint:
    url: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    slow_s: float = 3.0
    refuse_json_mode: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, stage: str, kind: str, times: int = 1,
               when: Callable[[dict[str, Any]], bool] = lambda inp: True) -> None:
        self.faults.append(Fault(stage, kind, times, when))

    def stages(self) -> list[str]:
        return [_input(r)["stage"] for r in self.requests]


def _input(body: dict[str, Any]) -> dict[str, Any]:
    user = body["messages"][1]["content"]
    assert user.startswith("INPUT\n")
    return json.loads(user.split("\n", 1)[1])  # type: ignore[no-any-return]


def _completion(content: str, finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]}


def _answer(ep: Endpoint, body: dict[str, Any]) -> tuple[int, Any, float]:
    """(status, JSON body or raw text, delay) for one request."""
    if ep.refuse_json_mode and "response_format" in body:
        return 400, {"error": {"message": "response_format is not supported"}}, 0.0
    inp = _input(body)
    stage = inp["stage"]
    fault = None
    with ep.lock:
        for f in ep.faults:
            if f.times > 0 and f.stage in (stage, "*") and f.when(inp):
                f.times -= 1
                fault = f.kind
                break
    reply = ORACLE[stage](inp)
    if fault == "http500":
        return 500, {"error": {"message": "upstream overloaded"}}, 0.0
    if fault == "http429":
        return 429, {"error": {"message": "rate limited"}}, 0.0
    if fault == "http401":
        return 401, {"error": {"message": "invalid api key"}}, 0.0
    if fault == "envelope":
        return 200, "<html>bad gateway</html>", 0.0
    if fault == "slow":
        return 200, _completion(json.dumps(reply)), ep.slow_s
    if fault == "malformed":
        return 200, _completion("Sure! Here is the JSON: {\"question\": "), 0.0
    if fault == "truncated":
        return 200, _completion(json.dumps(reply)[:40], finish="length"), 0.0
    if fault == "fenced":
        return 200, _completion("```json\n" + json.dumps(reply) + "\n```"), 0.0
    if fault == "wrong_gold":
        reply["chains"][0][-1]["answer"] = "Zzyzx Wrongvale"
    if fault == "broken_code":
        name = inp["tool"]["name"]
        reply = {"code": f"def {name}(**kwargs):\n    {MARKER}\n    return undefined_table[0]\n"}
    if fault == "syntax_error":
        reply = {"code": f"def {inp['tool']['name']}(:\n    return 1\n"}
    if fault == "extra_key":
        reply["note"] = "I added a comment"
    return 200, _completion(json.dumps(reply)), 0.0


def _handler(ep: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            with ep.lock:
                ep.requests.append(body)
                ep.headers.append({k.lower(): v for k, v in self.headers.items()})
            if self.path != "/v1/chat/completions":
                status, payload, delay = 404, {"error": {"message": "not found"}}, 0.0
            else:
                status, payload, delay = _answer(ep, body)
            time.sleep(delay)
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a slow reply

    return Handler


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    ep = Endpoint(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    server.RequestHandlerClass = _handler(ep)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield ep
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_for(ep: Endpoint, **overrides: Any) -> ChatClient:
    settings: dict[str, Any] = dict(request_timeout_s=10.0, backoff_s=0.01, max_backoff_s=0.05)
    settings.update(overrides)
    return ChatClient(LLMConfig(base_url=ep.url, model="scripted", **settings))


@pytest.fixture
def process_runner(process_backend: SandboxBackend) -> Iterator[Callable[[RunRequest], RunResult]]:
    box = process_backend.create(SandboxSpec(labels={"toolgym.episode": f"test-llm-{uuid.uuid4().hex[:8]}"}))
    yield box.run
    box.close()


def run_llm(ep: Endpoint, runner: Callable[[RunRequest], RunResult], count: int, *, seed: int = 5,
            knobs: ScalingKnobs | None = None, report: LLMReport | None = None, **client: Any) -> list[dict[str, Any]]:
    with client_for(ep, **client) as c:
        return list(generate_with_llm(seed, count, client=c, runner=runner, knobs=knobs or ALL_OPS,
                                      report=report, max_consecutive_failures=3))


# --- strict parsing ------------------------------------------------------------------------------

def test_replies_are_parsed_strictly() -> None:
    assert parse_json_reply('{"a": 1}') == {"a": 1}
    assert parse_json_reply('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    for bad in ('Sure: {"a": 1}', '{"a": 1} and more', '[1, 2]', '{"a": 1, "a": 2}', '{"a": NaN}', "", "```\n{}"):
        with pytest.raises(ReplyError):
            parse_json_reply(bad)


# --- good replies ----------------------------------------------------------------------------------

def test_good_replies_produce_tasks_verified_in_a_sandbox(
        endpoint: Endpoint, process_runner: Callable[[RunRequest], RunResult]) -> None:
    report = LLMReport()
    records = run_llm(endpoint, process_runner, 6, report=report)
    assert [r["id"] for r in records] == [f"toolgen-llm-5-{i:06d}" for i in range(6)]
    assert set(endpoint.stages()) == {"decompose", "documents", "integrate", "scale", "deploy"}
    for r in records:
        assert list(r)[:4] == ["id", "split", "question_type", "messages"]
        assert r["split"] in ("train", "validation", "test")
        assert all(MARKER in code for code in r["codes"].values()), "the code came from the endpoint"
        assert r["scaling"], "with every knob at 1 some operation applies"
    assert {op for r in records for op in r["scaling"]} == {
        "functional_generalization", "parameter_expansion", "type_generalization", "toolset_extension"}
    assert len({r["question_type"] for r in records}) >= 3
    # The same filter, once more, in a fresh run: every record passes.
    again = verify_in_sandbox(records, process_runner)
    assert len(again.kept) == 6 and not again.rejected
    assert report.kept == 6 and report.sandbox_calls > 0 and report.sandbox_rejected == 0
    assert set(report.rejected) <= {"ambiguous_gold", "answer_in_question", "duplicate_question"}


def test_same_replies_give_the_same_records(endpoint: Endpoint,
                                            process_runner: Callable[[RunRequest], RunResult]) -> None:
    first = run_llm(endpoint, process_runner, 3, seed=11)
    with client_for(endpoint) as c:
        second = list(generate_with_llm(11, 3, client=c, runner=process_runner, knobs=ALL_OPS, workers=3))
    assert json.dumps(first) == json.dumps(second)


def test_model_code_is_never_run_in_process(endpoint: Endpoint, process_runner: Callable[[RunRequest], RunResult],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import toolgym.taskgen.generator as gen

    def refuse(codes: Any) -> Any:
        raise AssertionError("model-written code must not run in-process")

    monkeypatch.setattr(gen, "own_code_executor", refuse)
    calls: list[RunRequest] = []

    def counting(request: RunRequest) -> RunResult:
        calls.append(request)
        return process_runner(request)

    with client_for(endpoint) as c:
        assert not LLMStages(c).pipeline().writes_own_code
        records = list(generate_with_llm(2, 2, client=c, runner=counting, knobs=ALL_OPS))
    assert len(records) == 2
    assert calls and all(MARKER in req.code for req in calls)


# --- the sandbox filter -------------------------------------------------------------------------

def test_a_wrong_gold_is_rejected_by_the_sandbox(endpoint: Endpoint,
                                                 process_runner: Callable[[RunRequest], RunResult]) -> None:
    endpoint.inject("decompose", "wrong_gold")
    report = LLMReport()
    records = run_llm(endpoint, process_runner, 2, report=report)
    assert len(records) == 2
    assert report.rejected.get("gold_not_produced") == 1, report.examples
    assert "Zzyzx Wrongvale" in report.examples["gold_not_produced"]
    assert report.sandbox_rejected == 1
    assert all("Zzyzx" not in json.dumps(r) for r in records)


def test_broken_code_is_rejected_by_the_sandbox(endpoint: Endpoint,
                                                process_runner: Callable[[RunRequest], RunResult]) -> None:
    endpoint.inject("deploy", "broken_code", when=lambda inp: not inp["tool"]["name"].startswith("find_"))
    report = LLMReport()
    records = run_llm(endpoint, process_runner, 2, report=report)
    assert len(records) == 2
    assert report.rejected.get("reference_call_error") == 1, report.examples
    assert "undefined_table" in report.examples["reference_call_error"]
    assert all("undefined_table" not in code for r in records for code in r["codes"].values())


def test_a_broken_distractor_is_rejected_too(endpoint: Endpoint,
                                            process_runner: Callable[[RunRequest], RunResult]) -> None:
    """No reference call reaches a distractor; the LLM mode calls each once in the sandbox."""
    endpoint.inject("deploy", "broken_code", when=lambda inp: inp["tool"]["name"].startswith("find_"))
    report = LLMReport()
    records = run_llm(endpoint, process_runner, 1, report=report)
    assert len(records) == 1
    assert report.rejected.get("distractor_broken") == 1, report.examples


# --- retries, repairs, failures ------------------------------------------------------------------

def test_code_that_does_not_parse_is_sent_back_for_repair(
        endpoint: Endpoint, process_runner: Callable[[RunRequest], RunResult]) -> None:
    endpoint.inject("deploy", "syntax_error")
    endpoint.inject("integrate", "extra_key")
    report = LLMReport()
    records = run_llm(endpoint, process_runner, 1, report=report)
    assert len(records) == 1
    repairs = [r for r in endpoint.requests if len(r["messages"]) == 4]
    assert len(repairs) == 2
    texts = " ".join(r["messages"][3]["content"] for r in repairs)
    assert "code does not parse" in texts and "unexpected key 'note'" in texts
    assert all(r["messages"][2]["role"] == "assistant" for r in repairs)
    assert not any(code.startswith("llm_") for code in report.rejected)


def test_malformed_json_timeouts_and_server_errors_are_retried(
        endpoint: Endpoint, process_runner: Callable[[RunRequest], RunResult]) -> None:
    endpoint.inject("decompose", "malformed")
    endpoint.inject("documents", "http500")
    endpoint.inject("documents", "http429")
    endpoint.inject("integrate", "slow")
    endpoint.inject("scale", "envelope")
    endpoint.inject("deploy", "truncated")
    endpoint.inject("deploy", "fenced")
    endpoint.slow_s = 3.0
    report = LLMReport()
    start = time.monotonic()
    records = run_llm(endpoint, process_runner, 1, report=report, request_timeout_s=1.0)
    assert len(records) == 1
    assert not any(code.startswith("llm_") for code in report.rejected), report.rejected
    stages = endpoint.stages()
    assert stages.count("decompose") >= 2 and stages.count("documents") >= 3 and stages.count("integrate") >= 2
    assert time.monotonic() - start < 30


def test_persistent_failures_are_reported_and_the_run_goes_on(
        endpoint: Endpoint, process_runner: Callable[[RunRequest], RunResult]) -> None:
    endpoint.inject("decompose", "http500", times=3)  # all attempts of one stage call
    endpoint.inject("documents", "malformed", times=3)
    report = LLMReport()
    records = run_llm(endpoint, process_runner, 1, report=report)
    assert len(records) == 1
    assert report.rejected.get("llm_unavailable") == 1 and report.rejected.get("llm_invalid_reply") == 1
    assert "HTTP 500" in report.examples["llm_unavailable"]
    assert "not valid JSON" in report.examples["llm_invalid_reply"] or "single JSON object" in \
        report.examples["llm_invalid_reply"]


def test_an_endpoint_that_stays_down_stops_the_run(process_runner: Callable[[RunRequest], RunResult]) -> None:
    config = LLMConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m", request_timeout_s=2,
                       backoff_s=0.01, max_attempts=2)
    report = LLMReport()
    with ChatClient(config) as c, pytest.raises(LLMUnavailable, match="3 tasks in a row"):
        list(generate_with_llm(1, 5, client=c, runner=process_runner, report=report, max_consecutive_failures=3))
    assert report.rejected == {"llm_unavailable": 3}
    assert c.requests == 6


def test_a_refused_request_is_a_configuration_error(endpoint: Endpoint,
                                                   process_runner: Callable[[RunRequest], RunResult]) -> None:
    endpoint.inject("*", "http401", times=100)
    with client_for(endpoint) as c, pytest.raises(LLMConfigError, match="TOOLGYM_LLM_API_KEY"):
        list(generate_with_llm(1, 2, client=c, runner=process_runner))
    assert len(endpoint.requests) == 1, "a refusal is not retried"


def test_key_from_the_environment_and_json_mode_fallback(
        endpoint: Endpoint, process_runner: Callable[[RunRequest], RunResult],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLGYM_LLM_API_KEY", "sk-test-123")
    endpoint.refuse_json_mode = True
    config = LLMConfig.from_env(endpoint.url, "scripted", backoff_s=0.01)
    with ChatClient(config) as c:
        records = list(generate_with_llm(3, 1, client=c, runner=process_runner))
    assert len(records) == 1
    assert all(h.get("authorization") == "Bearer sk-test-123" for h in endpoint.headers)
    assert "response_format" in endpoint.requests[0] and "seed" in endpoint.requests[0]
    assert "response_format" not in endpoint.requests[-1] and "seed" not in endpoint.requests[-1]
    assert all(r["model"] == "scripted" and r["temperature"] == 0.0 for r in endpoint.requests)


def test_the_reply_cache_replays_a_run(endpoint: Endpoint, process_runner: Callable[[RunRequest], RunResult],
                                       tmp_path: Path) -> None:
    cache = str(tmp_path / "replies.jsonl")
    first = run_llm(endpoint, process_runner, 2, cache_path=cache)
    sent = len(endpoint.requests)
    endpoint.inject("*", "http500", times=1000)  # the endpoint is now useless
    with client_for(endpoint, cache_path=cache) as c:
        second = list(generate_with_llm(5, 2, client=c, runner=process_runner, knobs=ALL_OPS))
        assert c.requests == 0
    assert len(endpoint.requests) == sent
    assert json.dumps(first) == json.dumps(second)


@pytest.mark.docker
def test_good_replies_verified_in_docker(endpoint: Endpoint, docker_backend: SandboxBackend) -> None:
    box = docker_backend.create(SandboxSpec(labels={"toolgym.episode": f"test-llm-{uuid.uuid4().hex[:8]}"}))
    try:
        endpoint.inject("deploy", "broken_code", when=lambda inp: not inp["tool"]["name"].startswith("find_"))
        report = LLMReport()
        records = run_llm(endpoint, box.run, 2, report=report)
    finally:
        box.close()
    assert len(records) == 2 and report.rejected.get("reference_call_error") == 1


# --- the command ----------------------------------------------------------------------------------

def _toolgym(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TOOLGYM_LLM_API_KEY"}
    return subprocess.run([str(VENV_BIN / "toolgym"), "generate", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_llm_mode_end_to_end(endpoint: Endpoint, tmp_path: Path) -> None:
    endpoint.inject("decompose", "wrong_gold")
    out = tmp_path / "llm.jsonl"
    proc = _toolgym("--seed", "4", "--count", "2", "--out", str(out), "--llm-base-url", endpoint.url,
                    "--llm-model", "scripted", "--verify-sandbox", "process", "--sandboxes", "1", "--llm-workers", "1",
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["toolgen-llm-4-000000", "toolgen-llm-4-000001"]
    assert "gold_not_produced" in proc.stdout and "sandbox verification (process" in proc.stdout
    assert "LLM:" in proc.stdout and "question types x scaling operations" in proc.stdout


def test_cli_llm_mode_refuses_to_skip_the_sandbox(endpoint: Endpoint, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    proc = _toolgym("--count", "1", "--out", str(out), "--llm-base-url", endpoint.url, "--llm-model", "m",
                    "--verify-sandbox", "none")
    assert proc.returncode == 2 and "never run" in proc.stderr
    assert not out.exists() and not endpoint.requests


def test_cli_reports_a_dead_endpoint_without_a_traceback(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    proc = _toolgym("--count", "3", "--out", str(out), "--llm-base-url", f"http://127.0.0.1:{_free_port()}/v1",
                    "--llm-model", "m", "--verify-sandbox", "process", "--sandboxes", "1", "--llm-attempts", "1",
                    "--llm-workers", "1", "--no-progress")
    assert proc.returncode == 1
    assert "in a row" in proc.stderr and "llm_unavailable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not Path(f"{out}.partial").exists()
