"""Hostile tool code over real HTTP, in real Docker sandboxes.

Each test registers a ToolUse task (POST /v1/envs/toolgym/ToolUse-v0/tasks) whose tool
``codes`` do the hostile thing, calls that tool, and checks: the step is a 200 carrying
FTRL's message ``an error occured when call {name}: ...`` (never a 5xx, never a crash), the
next call in the same episode still works in the same sandbox, a second live episode still
steps correctly, the server is healthy and no container is left behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_kit import (
    ERROR_PREFIX,
    Server,
    ServerFarm,
    call,
    check_healthy,
    close,
    episode_containers,
    metric,
    register,
    reset,
    step,
    tags,
    tool_message,
    tooluse_record,
    wait_for_teardown,
    wait_gone,
)

pytestmark = pytest.mark.docker

TIMEOUT_S = 1.0
MAX_OUTPUT_CHARS = 2000


@pytest.fixture(scope="module", params=["docker", "namespace"])
def server(farm: ServerFarm, request: pytest.FixtureRequest) -> Server:
    """The container tier, then the namespace tier: the same hostile tools must hold on both."""
    return farm.start(request.param, max_output_chars=MAX_OUTPUT_CHARS)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def witness(client: httpx.Client) -> str:
    return str(reset(client, "tu-single-1", max_turns=200, tool_timeout_s=TIMEOUT_S)["episode_id"])


def sandbox_failures(client: httpx.Client) -> float:
    return metric(client, "toolgym_sandbox_failures_total")


def sandbox_of(server: Server, episode_id: str) -> str:
    """Which sandbox serves the episode: its container (container tier), or its namespace set's id
    (namespace tier: episodes share host containers, so no container is the episode's own)."""
    if server.backend.name == "namespace":
        return str(server.manager._live[episode_id].slot.sandbox.id)  # type: ignore[union-attr]
    (container,) = episode_containers(episode_id, running_only=True)
    return str(container["Id"])


def play_hostile(
    server: Server, client: httpx.Client, witness: str, name: str, source: str, arguments: dict[str, Any],
    params: dict[str, str] | None = None, *, max_seconds: float = 8.0, tool_timeout_s: float = TIMEOUT_S,
) -> tuple[dict[str, Any], str]:
    """Register a task with tool ``name`` = ``source``, call it once, then call ``echo`` in the
    same episode. Returns the hostile call's step result and its tool message."""
    (task_id,) = register(client, tooluse_record({name: source}, params={name: params or {}}))
    episode_id = reset(client, task_id, tool_timeout_s=tool_timeout_s)["episode_id"]
    sandbox = sandbox_of(server, episode_id)
    failures = sandbox_failures(client)

    started = time.monotonic()
    result = step(client, episode_id, tags(call(name, **arguments)))
    elapsed = time.monotonic() - started
    assert elapsed < max_seconds, f"the hostile call took {elapsed:.1f} s"
    text = tool_message(result)
    assert text.startswith(ERROR_PREFIX.format(name=name)), text
    assert result["reward"] == 0.0 and not result["terminated"] and not result["truncated"]
    assert result["info"]["reward_components"]["calls"] == 1

    follow = step(client, episode_id, tags(call("echo", text="still here")))
    assert tool_message(follow) == "still here", follow
    assert follow["info"]["status"] == "ok"
    # The same sandbox answered: the hostile code did not break it (no replacement).
    assert sandbox_failures(client) == failures
    assert sandbox_of(server, episode_id) == sandbox

    close(client, episode_id)
    wait_gone(episode_id)  # DELETE must remove the episode's container (in the background)
    wait_for_teardown(server)
    check_healthy(server, client, witness)
    return result, text


def test_tool_that_raises(server: Server, client: httpx.Client, witness: str) -> None:
    source = "def boom(x):\n    raise RuntimeError('kaboom: ' + str(x))\n"
    result, text = play_hostile(server, client, witness, "boom", source, {"x": 7}, {"x": "integer"})
    assert text == ERROR_PREFIX.format(name="boom") + "kaboom: 7"
    assert result["info"]["status"] == "ok"


def test_tool_that_exits_the_process(server: Server, client: httpx.Client, witness: str) -> None:
    source = "import os\ndef leave():\n    os._exit(3)\n"
    play_hostile(server, client, witness, "leave", source, {})


def test_tool_that_loops_forever_times_out(server: Server, client: httpx.Client, witness: str) -> None:
    source = "def spin():\n    n = 0\n    while True:\n        n += 1\n"
    started = time.monotonic()
    result, text = play_hostile(server, client, witness, "spin", source, {}, max_seconds=TIMEOUT_S + 2.5)
    assert time.monotonic() - started >= TIMEOUT_S
    assert result["info"]["status"] == "timeout", result["info"]
    assert "timed out after 1 s" in text, text


def test_tool_that_sleeps_forever_times_out(server: Server, client: httpx.Client, witness: str) -> None:
    source = "import time\ndef nap():\n    time.sleep(3600)\n"
    result, _ = play_hostile(server, client, witness, "nap", source, {}, max_seconds=TIMEOUT_S + 2.5)
    assert result["info"]["status"] == "timeout"


def test_fork_bomb(server: Server, client: httpx.Client, witness: str) -> None:
    source = (
        "import os\n"
        "def bomb():\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    result, text = play_hostile(server, client, witness, "bomb", source, {}, max_seconds=TIMEOUT_S + 4)
    assert result["info"]["status"] == "timeout", text


def test_fork_bomb_that_returns_leaves_nothing_behind(server: Server, client: httpx.Client, witness: str) -> None:
    """Children that outlive the call (new sessions, ignoring SIGTERM) are killed after it."""
    source = (
        "import os, signal, time\n"
        "def spawn():\n"
        "    for _ in range(20):\n"
        "        if os.fork() == 0:\n"
        "            os.setsid()\n"
        "            signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "            time.sleep(3600)\n"
        "            os._exit(0)\n"
        "    raise RuntimeError('spawned')\n"
    )
    play_hostile(server, client, witness, "spawn", source, {})


def test_tool_that_allocates_without_end(server: Server, client: httpx.Client, witness: str) -> None:
    source = "def hog():\n    chunks = []\n    while True:\n        chunks.append(bytearray(16 * 1024 * 1024))\n"
    # Filling 512 MB takes well under a second on a quiet machine, several on a loaded one: the
    # run's time limit is not what this test is about, the memory limit is.
    _, text = play_hostile(server, client, witness, "hog", source, {}, tool_timeout_s=10.0, max_seconds=20.0)
    assert "MemoryError" in text, "an exception without a message is named by its class"


def test_tool_that_raises_without_a_message(server: Server, client: httpx.Client, witness: str) -> None:
    source = "def quiet():\n    raise LookupError()\n"
    _, text = play_hostile(server, client, witness, "quiet", source, {})
    assert text == ERROR_PREFIX.format(name="quiet") + "LookupError"


def test_tool_that_floods_stdout_forever(server: Server, client: httpx.Client, witness: str) -> None:
    source = "import sys\ndef flood():\n    while True:\n        sys.stdout.write('x' * 65536)\n"
    result, _ = play_hostile(server, client, witness, "flood", source, {})
    assert result["info"]["status"] == "timeout"


def test_tool_that_floods_stdout_then_fails(server: Server, client: httpx.Client, witness: str) -> None:
    source = "def noisy():\n    print('y' * (32 * 1024 * 1024))\n    raise ValueError('after the flood')\n"
    _, text = play_hostile(server, client, witness, "noisy", source, {})
    assert text == ERROR_PREFIX.format(name="noisy") + "after the flood"


def test_tool_that_returns_too_much(server: Server, client: httpx.Client, witness: str) -> None:
    """Past the default hard cap (16 MiB), a return value is a failed call naming the knob."""
    source = "def huge():\n    return 'z' * (20 * 1024 * 1024)\n"
    _, text = play_hostile(server, client, witness, "huge", source, {})
    assert text == ERROR_PREFIX.format(name="huge") + (
        "the tool returned more than 16777216 bytes (max_tool_output_bytes; raise it in the reset options,"
        " up to 67108864)"
    )


@pytest.mark.parametrize("target", ["connect", "dns", "udp"])
def test_tool_that_tries_the_network(server: Server, client: httpx.Client, witness: str, target: str) -> None:
    source = (
        "import socket\n"
        "def net(target):\n"
        "    if target == 'connect':\n"
        "        socket.create_connection(('1.1.1.1', 53), timeout=0.5)\n"
        "    elif target == 'dns':\n"
        "        socket.getaddrinfo('example.com', 80)\n"
        "    else:\n"
        "        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "        s.sendto(b'x', ('8.8.8.8', 53))\n"
        "    return 'reached the network'\n"
    )
    _, text = play_hostile(server, client, witness, "net", source, {"target": target}, {"target": "string"})
    assert "reached the network" not in text


def test_tool_that_attacks_the_agent(server: Server, client: httpx.Client, witness: str) -> None:
    """Sandboxed code must not end or speak for the agent that serves the sandbox: a signal
    to it, or a forged reply on its stream, would turn a policy's failure into an
    infrastructure failure (masked, never scored)."""
    source = (
        "import os, signal\n"
        "def attack():\n"
        "    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGPIPE):\n"
        "        try:\n"
        "            os.kill(1, sig)\n"
        "        except OSError:\n"
        "            pass\n"
        "    for fd in (0, 1):\n"
        "        try:\n"
        "            with open('/proc/1/fd/%d' % fd, 'w') as f:\n"
        "                f.write('{\"id\": 2, \"status\": \"ok\", \"value\": \"forged\"}\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "    raise RuntimeError('attack over')\n"
    )
    _, text = play_hostile(server, client, witness, "attack", source, {})
    assert text == ERROR_PREFIX.format(name="attack") + "attack over"


def test_long_output_is_capped_for_the_policy_but_verified_whole(
    server: Server, client: httpx.Client, witness: str
) -> None:
    """``max_output_chars`` cuts what the policy sees (with ``output_truncated``); the gold at
    the end of the full output still earns its credit (docs/architecture.md)."""
    source = "def report():\n    return 'filler ' * 2000 + 'the code is QUOKKA-5521'\n"
    record = tooluse_record({"report": source}, golds={"report": ["QUOKKA-5521"]}, answer="QUOKKA-5521")
    (task_id,) = register(client, record)
    episode_id = reset(client, task_id, tool_timeout_s=TIMEOUT_S)["episode_id"]
    result = step(client, episode_id, tags(call("report")))
    text = tool_message(result)
    assert result["info"]["output_truncated"] is True
    assert len(text) < 2 * MAX_OUTPUT_CHARS and "QUOKKA-5521" not in text and "max_output_chars" in text
    assert result["reward"] == 1.0 and result["info"]["reward_components"]["solved"] == 1
    short = step(client, episode_id, tags(call("echo", text="short")))
    assert short["info"]["output_truncated"] is False
    final = step(client, episode_id, "The code is QUOKKA-5521.")
    assert final["reward"] == 1.0 and final["info"]["metrics"]["solve_rate"] == 1.0
    check_healthy(server, client, witness)


def test_a_10_mb_tool_output_is_verified_whole_and_shown_capped(
    server: Server, client: httpx.Client, witness: str
) -> None:
    """A tool that returns 10 MB is not an error: FTRL's verifier reads all of it (the gold is
    at its very end), the policy is shown ``max_output_chars`` of it, and the step says so."""
    source = "def report():\n    return 'filler ' * 1500000 + 'the code is QUOKKA-5521'\n"
    record = tooluse_record({"report": source}, golds={"report": ["QUOKKA-5521"]}, answer="QUOKKA-5521")
    (task_id,) = register(client, record)
    episode_id = reset(client, task_id, tool_timeout_s=10.0)["episode_id"]
    result = step(client, episode_id, tags(call("report")))
    text = tool_message(result)
    assert text.startswith("filler filler") and not text.startswith(ERROR_PREFIX.format(name="report"))
    assert result["info"]["output_truncated"] is True
    assert len(text) < 2 * MAX_OUTPUT_CHARS and "max_output_chars" in text
    assert result["reward"] == 1.0 and result["info"]["reward_components"]["solved"] == 1
    close(client, episode_id)
    check_healthy(server, client, witness)


def test_a_tool_output_over_the_hard_cap_is_a_clear_error(
    server: Server, client: httpx.Client, witness: str
) -> None:
    source = "def flood():\n    return 'x' * 3000000\n"
    (task_id,) = register(client, tooluse_record({"flood": source}))
    episode_id = reset(client, task_id, tool_timeout_s=10.0, max_tool_output_bytes=2 * 1024 * 1024)["episode_id"]
    result = step(client, episode_id, tags(call("flood")))
    assert tool_message(result) == (
        ERROR_PREFIX.format(name="flood") + "the tool returned more than 2097152 bytes"
        " (max_tool_output_bytes; raise it in the reset options, up to 67108864)"
    )
    assert result["info"]["output_truncated"] is False
    assert tool_message(step(client, episode_id, tags(call("echo", text="fine")))) == "fine"
    close(client, episode_id)
    check_healthy(server, client, witness)


def test_tool_output_that_looks_like_the_protocol_is_just_text(
    server: Server, client: httpx.Client, witness: str
) -> None:
    source = (
        "def mimic():\n"
        "    print('{\"id\": 2, \"status\": \"ok\", \"value\": \"forged\"}')\n"
        "    return {'id': 3, 'status': 'protocol_error', 'note': '\\n{\"hello\": \"toolgym-agent\"}\\n'}\n"
    )
    (task_id,) = register(client, tooluse_record({"mimic": source}))
    episode_id = reset(client, task_id, tool_timeout_s=TIMEOUT_S)["episode_id"]
    result = step(client, episode_id, tags(call("mimic")))
    assert json.loads(tool_message(result)) == {"id": 3, "status": "protocol_error",
                                                "note": '\n{"hello": "toolgym-agent"}\n'}
    follow = step(client, episode_id, tags(call("echo", text="fine")))
    assert tool_message(follow) == "fine"
    close(client, episode_id)
    check_healthy(server, client, witness)
