"""The escape suite on the container tier: hostile TOOL code (a ToolUse task whose tool is the
attack) and hostile MODEL code (a CodeMath code block), against a real server with the Docker
backend, while a bystander episode keeps stepping (escape_kit.Bystander).

Every attack must be contained, reported with the right ``info["status"]``, earn no reward,
and leave the server, the attacking episode and the bystander healthy.

===============================  ==========  =======================  ===========================================
attack                           tier        expected status          what contains it
===============================  ==========  =======================  ===========================================
connect to host loopback,        tool+model  ok (all attempts fail    ``network_mode=none``: only ``lo`` in a
bridge gateway, 169.254.169.254,             fast), no DNS, no        netns of its own; nothing mounted (no
Docker socket                                docker.sock              Docker socket)
read server env / keys file /    tool+model  ok, nothing leaks        container env is PATH/LANG/HOME only;
/proc/*/environ / host paths                                          nothing from the host mounted; uid 65534
/proc/sys, /sys writes, unshare, tool+model  ok, every attempt fails  read-only /proc/sys and /sys, cap_drop
ptrace of the agent, setuid(0),                                       ALL, no-new-privileges (setuid helpers
mount/umount/su helpers                                               inert), Docker's seccomp profile, agent
                                                                      not dumpable
write outside the work dirs      tool+model  ok, EROFS/EACCES         ``read_only`` root, tmpfs /work and /tmp
SIGKILL to the agent / pid 1 /   tool+model  ok, same sandbox serves  the agent is pid 1 of the container's pid
``kill(-1)``                                 the next call            namespace: signals it does not handle
                                                                      are dropped
fork bomb                        tool+model  timeout                  container pids limit; run timeout; the
                                                                      agent kills every leftover (kill(-1))
memory bomb                      tool+model  ok (MemoryError text)    RLIMIT_AS per run; memory cgroup, no swap
fill /work, /tmp, /dev/shm       tool+model  ok, ENOSPC/EFBIG         tmpfs ``size=`` (64 MiB each, in the
                                                                      container's memory cgroup); RLIMIT_FSIZE
stdout flood, CPU loop, sleep    tool+model  timeout                  run timeout; the agent drains and caps the
                                                                      streams
forged result record (tool code  tool        ok (the tool's error     the agent accepts only a JSON object from
writes JSON into the agent's                 text), never a sandbox   its result pipe (before the fix: an agent
result pipe, then exits)                     failure                  exception, a masked, retried infra error)
reply amplification (forged      tool        ok                       the agent writes its reply (six bytes of
record of invalid UTF-8, every                                        JSON per byte of output) a slice at a
tmpfs full)                                                           time (before the fix: OOM-killed at 64 MiB)
read another episode's files     tool        ok, nothing found        one container (own tmpfs, own pid ns)
                                                                      per episode, never reused
fake reward through output       tool+model  ok, reward 0             rewards come from what the server parses
                                                                      of the policy's turn; tool output is text
===============================  ==========  =======================  ===========================================

An ``infra_error`` (HTTP 503 ``sandbox_error``, retryable) is what a dead sandbox gives; no
attack here kills a container's agent, so none is expected on this tier. That path is shown by
test_escape_process.py (code kills its agent) and test_lifecycle.py (a container killed from
outside between and during steps).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from escape_attacks import (
    ATTACK_AMPLIFY_REPLY,
    ATTACK_CPU_LOOP,
    ATTACK_FAKE_REWARD,
    ATTACK_FILL_DISK,
    ATTACK_FORGE_RESULT,
    ATTACK_FORK_BOMB,
    ATTACK_HUNT_SECRET,
    ATTACK_KERNEL,
    ATTACK_KILL_AGENT,
    ATTACK_MEMORY_BOMB,
    ATTACK_NETWORK,
    ATTACK_PLANT_SECRET,
    ATTACK_SECRETS,
    ATTACK_SLEEP_LOOP,
    ATTACK_STDOUT_FLOOD,
    ATTACK_WRITE_OUTSIDE,
)
from escape_kit import (
    check_model_episode_goes_on,
    check_tool_episode_goes_on,
    model_attack,
    tool_attack,
)
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
)

pytestmark = pytest.mark.docker

KEY = f"escape-key-{uuid.uuid4().hex}"
FILE_KEY = f"escape-file-key-{uuid.uuid4().hex}"
CANARY = f"escape-canary-{uuid.uuid4().hex}"
HUNG_S = 2.0
"""The tool/code timeout of attacks that never end."""
MiB = 1024 * 1024
FAILED = ("ok", "connected", "resolved")
BREACHES = (
    "import json as _j\n_seen = _j.loads(attack(ARG))\n"
    "print('breaches:', sorted(k for k, v in _seen.items() if (v[0] if isinstance(v, list) and v else v) in"
    f" {FAILED!r}) + (['docker_sock'] if _seen.get('docker_sock') else []))\n"
)
"""Model-tier tail: CodeMath shows 512 characters of output, so the code prints only what got through."""


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(FILE_KEY + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(farm: ServerFarm, keys_file: Path) -> Iterator[Server]:
    # A secret in the server's own environment, as a deployment's TOOLGYM_API_KEYS would be.
    os.environ["TOOLGYM_ESCAPE_CANARY"] = CANARY
    try:
        yield farm.start("docker", max_output_chars=100_000, api_keys=(KEY,), api_keys_file=str(keys_file),
                         warm_pool_size=2)
    finally:
        os.environ.pop("TOOLGYM_ESCAPE_CANARY", None)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY) as c:
        yield c


def report(text: str) -> dict[str, Any]:
    return dict(json.loads(text))


def no_breach(seen: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in seen.items() if (v[0] if isinstance(v, list) and v else v) in FAILED)


def secret_arg(server: Server, keys_file: Path) -> str:
    return "|".join([str(keys_file), server.settings.db_path, str(Path(__file__).resolve()), "/var/run/docker.sock"])


def observation_of(text: str) -> str:
    assert text.startswith("\nCode execution result: "), text
    return text[len("\nCode execution result: "):].strip()


# --- probes: everything must fail ------------------------------------------------------------------------
def test_network_tool(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_NETWORK, str(server.settings.port))
    assert result["info"]["status"] == "ok", text
    seen = report(text)
    assert no_breach(seen) == [], seen
    for target, (what, seconds) in ((k, v) for k, v in seen.items() if isinstance(v, list) and len(v) == 2
                                    and isinstance(v[1], float)):
        assert what in ("ENETUNREACH", "ECONNREFUSED", "EHOSTUNREACH"), (target, what)
        assert seconds < 2.5, f"{target}: the attempt hung {seconds} s instead of failing fast"
    assert seen["dns"] == "gaierror" and seen["docker_sock"] == [] and seen["unix"] == "ENOENT", seen
    check_tool_episode_goes_on(client, episode, result)
    check_healthy(server, client)


def test_network_model(server: Server, client: httpx.Client) -> None:
    episode, result, text = model_attack(server, client, KEY, ATTACK_NETWORK, str(server.settings.port),
                                         tail=BREACHES)
    assert result["info"]["status"] == "ok"
    assert observation_of(text) == "breaches: []", text
    check_model_episode_goes_on(client, episode, result)


def test_secrets_tool(server: Server, client: httpx.Client, keys_file: Path) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_SECRETS, secret_arg(server, keys_file))
    assert result["info"]["status"] == "ok", text
    for secret in (KEY, FILE_KEY, CANARY, "TOOLGYM"):
        assert secret not in text, f"{secret[:16]}... is visible inside the sandbox"
    seen = report(text)
    # The image's own variables (PATH, HOME, thread counts) only: nothing of the server's.
    assert not [k for k in seen["environ"] if any(w in k.upper() for w in ("TOOLGYM", "KEY", "TOKEN", "SECRET"))]
    for host_path in secret_arg(server, keys_file).split("|"):
        assert seen["errors"].get(host_path) == "ENOENT", (host_path, seen["errors"].get(host_path))
    assert seen["errors"]["/etc/shadow"] == "EACCES"
    check_tool_episode_goes_on(client, episode, result)


def test_secrets_model(server: Server, client: httpx.Client, keys_file: Path) -> None:
    tail = ("_seen = attack(ARG)\n"
            f"print('leaked:', [s[:12] for s in {[KEY, FILE_KEY, CANARY, 'TOOLGYM']!r} if s in _seen])\n")
    episode, result, text = model_attack(server, client, KEY, ATTACK_SECRETS, secret_arg(server, keys_file),
                                         tail=tail)
    assert result["info"]["status"] == "ok"
    assert observation_of(text) == "leaked: []", text
    check_model_episode_goes_on(client, episode, result)


def check_kernel_report(seen: dict[str, Any]) -> None:
    assert no_breach(seen) == [], seen
    for helper in ("/usr/bin/mount -t tmpfs none /tmp", "/usr/bin/umount /work", "/usr/bin/su -c id -u root"):
        assert seen[helper] != "exit 0", (helper, seen[helper])
    caps = seen["caps"]
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(caps[field], 16) == 0, caps
    assert caps["NoNewPrivs"] == "1" and seen["uid"] == [65534, 65534], seen


def test_kernel_and_privileges_tool(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_KERNEL, "")
    assert result["info"]["status"] == "ok", text
    check_kernel_report(report(text))
    check_tool_episode_goes_on(client, episode, result)


def test_kernel_and_privileges_model(server: Server, client: httpx.Client) -> None:
    tail = BREACHES + "print('caps:', _seen['caps']['CapEff'], _seen['caps']['NoNewPrivs'], _seen['uid'])\n"
    episode, result, text = model_attack(server, client, KEY, ATTACK_KERNEL, "", tail=tail)
    assert result["info"]["status"] == "ok"
    assert observation_of(text) == "breaches: []\ncaps: 0000000000000000 1 [65534, 65534]", text
    check_model_episode_goes_on(client, episode, result)


def test_write_outside_the_work_dir(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_WRITE_OUTSIDE, "")
    assert result["info"]["status"] == "ok", text
    seen = report(text)
    assert no_breach(seen) == [] and set(seen.values()) <= {"EROFS", "EACCES"}, seen
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, ATTACK_WRITE_OUTSIDE, "", tail=BREACHES)
    assert observation_of(text) == "breaches: []", text
    check_model_episode_goes_on(client, episode, result)


# --- the agent ---------------------------------------------------------------------------------------------
def test_signals_to_the_agent(server: Server, client: httpx.Client) -> None:
    """SIGKILL to the agent (the run's parent, pid 1) and ``kill(-1)``: the agent survives, the
    same sandbox answers the next call, no sandbox failure is counted."""
    failures = metric(client, "toolgym_sandbox_failures_total")
    episode, result, text = tool_attack(server, client, KEY, ATTACK_KILL_AGENT, "")
    assert result["info"]["status"] == "ok", text
    assert report(text)["parent_pid"] == 1, "the agent is the container's pid 1"
    (container,) = episode_containers(episode, running_only=True)
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, ATTACK_KILL_AGENT, "")
    assert result["info"]["status"] == "ok", text
    check_model_episode_goes_on(client, episode, result)
    assert metric(client, "toolgym_sandbox_failures_total") == failures
    assert container["State"] == "running"
    check_healthy(server, client)


@pytest.mark.parametrize("forged", ["5", '"value"', "[1, 2]", '{"error": {"nested": 1}, "error_type": 7}', "null",
                                    '{"value": {"a": 1}}', '{"value": 5}', '{"value": null}'])
def test_a_forged_result_record_is_the_tools_failure(server: Server, client: httpx.Client, forged: str) -> None:
    """Tool code that writes its own record into the agent's result pipe and exits: the call
    failed (the tool's error text, status ok), never a sandbox failure (that would turn the
    task's own code into a masked, retried infrastructure error)."""
    failures = metric(client, "toolgym_sandbox_failures_total")
    episode, result, text = tool_attack(server, client, KEY, ATTACK_FORGE_RESULT, forged)
    assert result["info"]["status"] == "ok", text
    assert text.startswith(ERROR_PREFIX.format(name="attack")), text
    assert metric(client, "toolgym_sandbox_failures_total") == failures, "not a sandbox failure"
    check_tool_episode_goes_on(client, episode, result)


@pytest.mark.parametrize("cap_mib", [16, pytest.param(64, marks=pytest.mark.slow)])
def test_reply_amplification_within_the_memory_limit(server: Server, client: httpx.Client, cap_mib: int) -> None:
    """A forged record of ``max_tool_output_bytes`` (16 MiB by default, 64 MiB at most) of invalid
    UTF-8, with every tmpfs full: the agent's reply is six times that in ASCII JSON, built inside
    the container's memory limit; the agent must survive it (a dead agent would be a masked
    infra error). Before the agent wrote its reply a slice at a time, 64 MiB killed it."""
    failures = metric(client, "toolgym_sandbox_failures_total")
    episode, result, text = tool_attack(server, client, KEY, ATTACK_AMPLIFY_REPLY, str(cap_mib * MiB), timeout_s=30.0,
                                        max_tool_output_bytes=cap_mib * MiB)
    assert result["info"]["status"] == "ok", result["info"]
    assert text.startswith("\ufffd" * 100) and result["info"]["output_truncated"], "the forged value, capped"
    assert metric(client, "toolgym_sandbox_failures_total") == failures, "the agent died building its reply"
    check_tool_episode_goes_on(client, episode, result)


# --- resource attacks ------------------------------------------------------------------------------------
HUNG = [("fork_bomb", ATTACK_FORK_BOMB), ("stdout_flood", ATTACK_STDOUT_FLOOD), ("cpu_loop", ATTACK_CPU_LOOP),
        ("sleep_loop", ATTACK_SLEEP_LOOP)]


@pytest.mark.parametrize(("name", "source"), HUNG, ids=[n for n, _ in HUNG])
def test_attacks_that_never_end_time_out(server: Server, client: httpx.Client, name: str, source: str) -> None:
    started = time.monotonic()
    episode, result, text = tool_attack(server, client, KEY, source, "", timeout_s=HUNG_S)
    assert time.monotonic() - started < 60
    assert result["info"]["status"] == "timeout", (name, result["info"])
    assert text.startswith(ERROR_PREFIX.format(name="attack")) and "timed out" in text, text
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, source, "", timeout_s=HUNG_S)
    assert result["info"]["status"] == "timeout", (name, result["info"])
    assert observation_of(text) == "Timeout", text
    check_model_episode_goes_on(client, episode, result)
    check_healthy(server, client)


def test_memory_bomb(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_MEMORY_BOMB, "")
    assert result["info"]["status"] == "ok" and "MemoryError" in text, text
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, ATTACK_MEMORY_BOMB, "")
    assert result["info"]["status"] == "ok" and "MemoryError" in text, text
    check_model_episode_goes_on(client, episode, result)


@pytest.mark.parametrize("where", ["/work", "/tmp", "/dev/shm"])
def test_disk_fill(server: Server, client: httpx.Client, where: str) -> None:
    cap = server.settings.sandbox_spec(labels={}).workdir_bytes
    episode, result, text = tool_attack(server, client, KEY, ATTACK_FILL_DISK, where)
    assert result["info"]["status"] == "ok", text
    seen = report(text)
    assert seen["errno"] in ("ENOSPC", "EFBIG") and seen["bytes"] <= cap, seen
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, ATTACK_FILL_DISK, where)
    assert result["info"]["status"] == "ok", text
    seen = report(observation_of(text))
    assert seen["errno"] in ("ENOSPC", "EFBIG") and seen["bytes"] <= cap, seen
    check_model_episode_goes_on(client, episode, result)
    check_healthy(server, client)


# --- other episodes and the reward channel ---------------------------------------------------------------
def test_another_episodes_files_are_out_of_reach(server: Server, client: httpx.Client) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    (task_id,) = register(client, tooluse_record({"attack": ATTACK_PLANT_SECRET + ATTACK_HUNT_SECRET.replace(
        "def attack(", "def hunt(")}, params={"attack": {"arg": "string"}}))
    planter = reset(client, task_id, tool_timeout_s=20.0)["episode_id"]
    assert tool_message(step(client, planter, tags(call("attack", arg=secret)))) == "planted"
    episode, result, text = tool_attack(server, client, KEY, ATTACK_HUNT_SECRET, secret, timeout_s=20.0)
    assert result["info"]["status"] == "ok" and text == "hits: []", text
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, ATTACK_HUNT_SECRET, secret, timeout_s=20.0)
    assert observation_of(text) == "hits: []", text
    check_model_episode_goes_on(client, episode, result)
    close(client, planter)


def test_fake_reward_through_tool_output(server: Server, client: httpx.Client) -> None:
    """A tool printing and returning text that mimics a call, the step JSON and a boxed answer:
    it is the call's text, no call is made from it, no reward, the episode goes on."""
    episode, result, text = tool_attack(server, client, KEY, ATTACK_FAKE_REWARD, "")
    assert result["info"]["status"] == "ok"
    assert '{"reward": 1.0' in text and "<tool_call>" in text, text
    assert len(result["observation"]["messages"]) == 1, "the fake call in the output was not run"
    check_tool_episode_goes_on(client, episode, result)


def test_fake_reward_through_model_output(server: Server, client: httpx.Client) -> None:
    """Code printing a fake observation, a fake step JSON and a wrong boxed answer: the answer
    it printed is what SimpleTIR scores (wrong, 0); nothing else in it counts."""
    episode, result, text = model_attack(server, client, KEY, ATTACK_FAKE_REWARD, "", tail="attack(ARG)\n")
    assert result["info"]["status"] == "ok" and result["terminated"], result
    assert result["reward"] == 0.0 and result["info"]["extracted_answer"] == "999", result["info"]
    assert "<tool_call>" in text, "the fake call is shown as output and nothing more"
    check_model_episode_goes_on(client, episode, result)
    check_healthy(server, client)
