"""The agent's request stream, driven over its own pipes: how lines are cut, refused and answered.

The agent reads its stdin itself (not through a buffered reader) so it can tell whether a request
is waiting before it forks its standby; these check that the lines still come out as a line
reader would cut them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolgym.server.sandbox.agent_client import AGENT_SOURCE

MAX_REQUEST_BYTES = 64 * 1024 * 1024
CALL = {"op": "run", "code": "def f(x):\n    return x * 2\n", "call": {"function": "f", "arguments": {"x": 21}}}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-u", "-I", "-c", AGENT_SOURCE, "--workdir", str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["hello"] == "toolgym-agent"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def send(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()


def reply(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert proc.stdout is not None
    return dict(json.loads(proc.stdout.readline()))


def test_lines_split_across_writes_and_joined_in_one_are_each_answered(agent: subprocess.Popen[bytes]) -> None:
    line = json.dumps(dict(CALL, id=1)).encode()
    send(agent, line[:10])
    time.sleep(0.05)  # the agent has part of a line: it must wait for the rest
    send(agent, line[10:] + b"\n")
    assert reply(agent)["value"] == "42"
    send(agent, (json.dumps({"id": 2, "op": "ping"}) + "\n" + json.dumps(dict(CALL, id=3)) + "\n").encode())
    assert reply(agent) == {"id": 2, "status": "ok", "pong": True}
    second = reply(agent)
    assert (second["id"], second["value"]) == (3, "42")


def test_garbage_and_oversized_lines_are_refused_and_the_stream_goes_on(agent: subprocess.Popen[bytes]) -> None:
    send(agent, b"not json\n")
    assert reply(agent)["error"] == "request is not a JSON object"
    send(agent, b"x" * (MAX_REQUEST_BYTES + 5) + b"\n" + json.dumps(dict(CALL, id=4)).encode() + b"\n")
    assert reply(agent) == {"id": None, "status": "protocol_error", "error": "request too large"}
    after = reply(agent)
    assert (after["id"], after["status"], after["value"]) == (4, "ok", "42")


def test_a_last_line_without_newline_is_answered_then_the_agent_exits(agent: subprocess.Popen[bytes]) -> None:
    send(agent, json.dumps(dict(CALL, id=5)).encode())
    assert agent.stdin is not None
    agent.stdin.close()
    assert reply(agent)["value"] == "42"
    assert agent.wait(timeout=10) == 0


def test_run_many_hands_its_raw_line_to_the_standby(agent: subprocess.Popen[bytes]) -> None:
    """The first run of a batch goes to the standby as the batch's own line; each run its own result."""
    for rid in range(6, 9):
        time.sleep(0.05)  # idle: a standby is waiting
        runs = [dict(CALL, call={"function": "f", "arguments": {"x": n}}) for n in (rid, rid + 100)]
        send(agent, (json.dumps({"id": rid, "op": "run_many", "runs": runs}) + "\n").encode())
        got = reply(agent)
        assert [r["value"] for r in got["results"]] == [str(2 * rid), str(2 * (rid + 100))], got
