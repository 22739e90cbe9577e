"""``toolgym generate`` end to end, as a user runs it: the installed command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from toolgym.taskgen import QUESTION_TYPES, SCALING_OPS, generate, single_step_tasks

TOOLGYM = str(Path(sys.executable).parent / "toolgym")


def toolgym_generate(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOLGYM, "generate", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONHASHSEED": "random"})


def jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def test_same_seed_writes_the_same_bytes_and_prints_the_summary(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first = toolgym_generate("--seed", "1", "--count", "200", "--out", str(a))
    second = toolgym_generate("--seed", "1", "--count", "200", "--out", str(b), "--no-progress")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text(encoding="utf-8") == jsonl(generate(1, 200)), "the command writes the library's records"
    records = [json.loads(line) for line in a.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 200
    for r in records[:20]:
        assert {"messages", "tools", "codes", "answer", "unsolved_set", "reference_solution", "question_type",
                "scaling", "split"} <= set(r)
    out = first.stdout
    assert "wrote 200 ToolUse tasks" in out and "tasks/s" in out
    assert "rejected during generation:" in out and "ambiguous_gold" in out
    assert "question types x scaling operations" in out
    assert all(name in out for name in (*QUESTION_TYPES, *SCALING_OPS))
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[-1] == "200"
    # stderr is a pipe here, so no bar is drawn (tests/commands/test_json_flag.py draws one on a
    # pseudo-terminal); --no-progress keeps it off on a terminal too.
    assert "200/200" not in first.stderr and "200/200" not in second.stderr


def test_other_seeds_write_other_tasks(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert toolgym_generate("--seed", "1", "--count", "20", "--out", str(a), "--no-progress").returncode == 0
    assert toolgym_generate("--seed", "2", "--count", "20", "--out", str(b), "--no-progress").returncode == 0
    assert a.read_bytes() != b.read_bytes()


def test_function_call_records(tmp_path: Path) -> None:
    out = tmp_path / "fc.jsonl"
    proc = toolgym_generate("--seed", "3", "--count", "50", "--function-call", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == jsonl(single_step_tasks(3, 50))
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(set(r) == {"id", "split", "messages", "tools", "gold_calls"} for r in records)
    assert all(r["id"].startswith("toolgen-fc-3-") and r["gold_calls"] for r in records)
    assert "wrote 50 FunctionCall tasks" in proc.stdout
    table = proc.stdout.split("question types x scaling operations:")[1]
    rows = {line.split()[0]: line.split() for line in table.strip().splitlines()[1:]}
    assert rows["multi_hop"][-1] == "0" and rows["parallel_multi_hop"][-1] == "0"


def test_records_to_stdout_and_the_summary_to_stderr() -> None:
    proc = toolgym_generate("--seed", "1", "--count", "5", "--out", "-", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == jsonl(generate(1, 5))
    assert "wrote 5 ToolUse tasks to stdout" in proc.stderr


def test_verify_sandbox_process(tmp_path: Path) -> None:
    """Every kept task's reference solution runs again in real (process) sandboxes; the
    generator's own tasks all pass, so the bytes are those of a run without the check."""
    out = tmp_path / "v.jsonl"
    proc = toolgym_generate("--seed", "1", "--count", "60", "--out", str(out), "--verify-sandbox", "process",
                            "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == jsonl(generate(1, 60))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("sandbox verification"))
    assert "(process, 2 sandboxes, NOT isolated" in line and "60 tasks" in line and "0 rejected" in line
    calls = int(line.split(" calls")[0].split()[-1])
    assert calls >= 60


def test_function_call_records_verified_in_a_sandbox(tmp_path: Path) -> None:
    out = tmp_path / "fcv.jsonl"
    proc = toolgym_generate("--seed", "3", "--count", "20", "--function-call", "--out", str(out),
                            "--verify-sandbox", "process", "--sandboxes", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == jsonl(single_step_tasks(3, 20))


@pytest.mark.docker
def test_verify_sandbox_docker_leaves_no_container(tmp_path: Path) -> None:
    from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED, docker_client

    out = tmp_path / "d.jsonl"
    proc = toolgym_generate("--seed", "1", "--count", "12", "--out", str(out), "--verify-sandbox", "docker",
                            "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == jsonl(generate(1, 12))
    assert "sandbox verification (docker, 2 sandboxes)" in proc.stdout
    client = docker_client()
    try:
        left = client.api.containers(all=True, filters={"label": [f"{LABEL_MANAGED}=1"]})
    finally:
        client.close()
    mine = [c for c in left if c["Labels"].get(LABEL_INSTANCE, "").startswith("toolgym-generate-")]
    assert not mine, "the command removes its sandboxes"


def test_bad_arguments_fail_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    proc = toolgym_generate("--count", "0", "--out", str(out))
    assert proc.returncode == 2 and "--count" in proc.stderr
    proc = toolgym_generate("--count", "3", "--out", str(out), "--llm-model", "m")
    assert proc.returncode == 2 and "go together" in proc.stderr
    proc = toolgym_generate("--count", "3")
    assert proc.returncode == 2 and "--out" in proc.stderr
    assert not out.exists()
