"""The escape suite on the process backend, which is NOT an isolation tier (its module doc:
limits, not isolation; code reads what its uid may read). Only the attacks whose outcome it
documents are played here, as hostile tool code and as hostile model code, with a bystander
episode stepping during each (escape_kit.Bystander). No network attack is played: the brief
of this suite is to attempt connections only from inside a network-less container.

=================================  ========================================  ===============================
attack                             expected                                   what contains it
=================================  ========================================  ===============================
SIGKILL to the agent (its parent)  HTTP 503 ``sandbox_error``, retryable     the server replaces the sandbox
                                   (infra_error, never a reward); the next   and replays the step once, then
                                   step runs on a fresh sandbox              gives up with a retryable error
CPU loop, sleep loop, stdout       ``timeout``                               run timeout; the agent kills
flood                                                                        the run's process group
memory bomb                        ``ok`` with MemoryError                   RLIMIT_AS per run
fork bomb (as root only)           ``timeout``                               a uid per sandbox, its
                                                                             RLIMIT_NPROC, ``kill(-1)``
host files                         a world-readable host file IS readable;   file permissions only (the
                                   the server's 0600 keys file is not        documented non-isolation)
forged result record               ``ok`` with the tool's error text         the agent's result parsing
fake reward through output         ``ok``, reward 0                          rewards come from what the
                                                                             server parses
=================================  ========================================  ===============================
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from escape_attacks import (
    ATTACK_CPU_LOOP,
    ATTACK_FAKE_REWARD,
    ATTACK_FORGE_RESULT,
    ATTACK_FORK_BOMB,
    ATTACK_KILL_AGENT,
    ATTACK_MEMORY_BOMB,
    ATTACK_SECRETS,
    ATTACK_SLEEP_LOOP,
    ATTACK_STDOUT_FLOOD,
)
from escape_kit import (
    Bystander,
    check_model_episode_goes_on,
    check_tool_episode_goes_on,
    code_block,
    codemath_task,
    model_attack,
    tool_attack,
)
from server_kit import (
    Server,
    ServerFarm,
    call,
    check_healthy,
    close,
    expect_error,
    metric,
    register,
    reset,
    step,
    tags,
    tool_message,
    tooluse_record,
)

HUNG_S = 2.0
KEY = f"escape-key-{uuid.uuid4().hex}"
FILE_KEY = f"escape-file-key-{uuid.uuid4().hex}"
CANARY = f"escape-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    directory.chmod(0o755)
    path = directory / "keys.txt"
    path.write_text(FILE_KEY + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def server(farm: ServerFarm, keys_file: Path) -> Iterator[Server]:
    os.environ["TOOLGYM_ESCAPE_CANARY"] = CANARY  # as a deployment's TOOLGYM_API_KEYS would be
    try:
        yield farm.start("process", api_keys=(KEY,), api_keys_file=str(keys_file), max_output_chars=100_000)
    finally:
        os.environ.pop("TOOLGYM_ESCAPE_CANARY", None)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY) as c:
        yield c


def test_the_backend_says_it_does_not_isolate(server: Server) -> None:
    assert server.backend.isolated is False


def test_killing_the_agent_is_a_retryable_infra_error(server: Server, client: httpx.Client) -> None:
    """The run kills its parent, the agent: the sandbox died, which is the infrastructure's
    failure, never the policy's: a retryable 503 (no step recorded, no reward), and the
    episode's next step runs on a fresh sandbox."""
    failures = metric(client, "toolgym_sandbox_failures_total")
    (task_id,) = register(client, tooluse_record({"attack": ATTACK_KILL_AGENT}, params={"attack": {"arg": "string"}}))
    episode = reset(client, task_id, tool_timeout_s=10.0)["episode_id"]
    with Bystander(server, KEY):
        r = client.post(f"/v1/episodes/{episode}/step", json={"action": tags(call("attack", arg="ppid-only"))})
    error = expect_error(r, 503, "sandbox_error")
    assert error["retryable"] is True, error
    assert metric(client, "toolgym_sandbox_failures_total") >= failures + 2, "replaced and replayed once"
    follow = step(client, episode, tags(call("echo", text="fresh sandbox")))
    assert tool_message(follow) == "fresh sandbox" and follow["info"]["status"] == "ok", follow
    close(client, episode)

    task = codemath_task(client)
    r = client.post("/v1/episodes", json={"env_id": "toolgym/CodeMath-v0", "task_id": task})
    assert r.status_code == 201, r.text
    episode = r.json()["episode_id"]
    with Bystander(server, KEY):
        r = client.post(f"/v1/episodes/{episode}/step", json={"action": code_block(ATTACK_KILL_AGENT, "ppid-only")})
    error = expect_error(r, 503, "sandbox_error")
    assert error["retryable"] is True, error
    check_model_episode_goes_on(client, episode, {"reward": 0.0, "terminated": False, "truncated": False})
    check_healthy(server, client)


HUNG = [("stdout_flood", ATTACK_STDOUT_FLOOD), ("cpu_loop", ATTACK_CPU_LOOP), ("sleep_loop", ATTACK_SLEEP_LOOP)]


@pytest.mark.parametrize(("name", "source"), HUNG, ids=[n for n, _ in HUNG])
def test_attacks_that_never_end_time_out(server: Server, client: httpx.Client, name: str, source: str) -> None:
    episode, result, text = tool_attack(server, client, KEY, source, "", timeout_s=HUNG_S)
    assert result["info"]["status"] == "timeout" and "timed out" in text, (name, text)
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, source, "", timeout_s=HUNG_S)
    assert result["info"]["status"] == "timeout" and "Timeout" in text, (name, text)
    check_model_episode_goes_on(client, episode, result)


@pytest.mark.skipif(os.geteuid() != 0, reason="only as root does each sandbox get a uid (and RLIMIT_NPROC) of its own")
def test_fork_bomb_as_root(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_FORK_BOMB, "", timeout_s=HUNG_S)
    assert result["info"]["status"] == "timeout", text
    check_tool_episode_goes_on(client, episode, result)
    check_healthy(server, client)


def test_memory_bomb(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_MEMORY_BOMB, "")
    assert result["info"]["status"] == "ok" and "MemoryError" in text, text
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, ATTACK_MEMORY_BOMB, "")
    assert result["info"]["status"] == "ok" and "MemoryError" in text, text
    check_model_episode_goes_on(client, episode, result)


@pytest.mark.skipif(os.geteuid() != 0, reason="as an ordinary user the code runs as that user and reads its files")
def test_host_files_only_as_their_permissions_allow(server: Server, client: httpx.Client, keys_file: Path) -> None:
    """What the module doc of the process backend says: host files the sandbox uid may read are
    readable (this very file), a 0600 file of the server's user is not."""
    here = str(Path(__file__).resolve())
    episode, result, text = tool_attack(server, client, KEY, ATTACK_SECRETS, f"{keys_file}|{here}")
    seen = json.loads(text)
    assert FILE_KEY not in text and KEY not in text
    assert seen["errors"][str(keys_file)] == "EACCES", seen["errors"].get(str(keys_file))
    assert here in seen["files"], f"a world-readable host file: {seen['errors'].get(here)}"
    assert CANARY not in text, "the server's environment reached the sandbox"
    check_tool_episode_goes_on(client, episode, result)


def test_fake_reward_through_output(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_FAKE_REWARD, "")
    assert result["info"]["status"] == "ok" and "<tool_call>" in text, text
    check_tool_episode_goes_on(client, episode, result)
    episode, result, _ = model_attack(server, client, KEY, ATTACK_FAKE_REWARD, "", tail="attack(ARG)\n")
    assert result["terminated"] and result["reward"] == 0.0, result
    check_model_episode_goes_on(client, episode, result)


def test_a_forged_result_record_is_the_tools_failure(server: Server, client: httpx.Client) -> None:
    failures = metric(client, "toolgym_sandbox_failures_total")
    episode, result, text = tool_attack(server, client, KEY, ATTACK_FORGE_RESULT, "[1, 2]")
    assert result["info"]["status"] == "ok" and "could not be read" in text, text
    assert metric(client, "toolgym_sandbox_failures_total") == failures
    check_tool_episode_goes_on(client, episode, result)
