"""The escape suite on the namespace tier: the container tier's attacks (test_escape_docker.py,
the same functions on the same attack list) against a server whose episodes are namespace sets
inside shared host containers, plus what only this tier must show: two episodes in one host
container see nothing of each other, the seccomp profile refuses what it should, and a host
container is recycled after N episodes and on an anomaly.

Differences from the container tier, each checked here: the code's uid is the episode's own
(1000 and up, inside its user namespace; 65534 to the host), and the agent is pid 1 of the
episode's pid namespace, not of a container.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from escape_attacks import ATTACK_KERNEL, ATTACK_KILL_AGENT
from escape_kit import check_model_episode_goes_on, check_tool_episode_goes_on, model_attack, tool_attack
from server_kit import Server, ServerFarm, check_healthy, metric
from test_escape_docker import (  # the container tier's tests, run here against this module's server
    BREACHES,
    KEY,
    client,
    keys_file,
    no_breach,
    observation_of,
    report,
    test_a_forged_result_record_is_the_tools_failure,
    test_another_episodes_files_are_out_of_reach,
    test_attacks_that_never_end_time_out,
    test_disk_fill,
    test_fake_reward_through_model_output,
    test_fake_reward_through_tool_output,
    test_memory_bomb,
    test_network_model,
    test_network_tool,
    test_reply_amplification_within_the_memory_limit,
    test_secrets_model,
    test_secrets_tool,
    test_write_outside_the_work_dir,
)

from toolgym.envs.runner import RunLimits, RunRequest
from toolgym.server.sandbox.base import Sandbox, SandboxSpec
from toolgym.server.sandbox.namespace import NamespaceBackend
from toolgym.server.sandbox.seccomp import PROFILE_PATH, profile_text

pytestmark = pytest.mark.docker

__all__ = [
    "client", "keys_file", "test_a_forged_result_record_is_the_tools_failure",
    "test_another_episodes_files_are_out_of_reach", "test_attacks_that_never_end_time_out", "test_disk_fill",
    "test_fake_reward_through_model_output", "test_fake_reward_through_tool_output", "test_memory_bomb",
    "test_network_model", "test_network_tool", "test_reply_amplification_within_the_memory_limit",
    "test_secrets_model", "test_secrets_tool", "test_write_outside_the_work_dir",
]


@pytest.fixture(scope="module")
def server(farm: ServerFarm, keys_file: Any) -> Iterator[Server]:
    from test_escape_docker import CANARY

    os.environ["TOOLGYM_ESCAPE_CANARY"] = CANARY
    try:
        yield farm.start("namespace", max_output_chars=100_000, api_keys=(KEY,), api_keys_file=str(keys_file),
                         warm_pool_size=2, isolation="namespace")
    finally:
        os.environ.pop("TOOLGYM_ESCAPE_CANARY", None)


def test_version_says_namespace(server: Server, client: httpx.Client) -> None:
    assert client.get("/v1/version").json()["isolation"] == "namespace"


def check_kernel_report(seen: dict[str, Any]) -> None:
    assert no_breach(seen) == [], seen
    for helper in ("/usr/bin/mount -t tmpfs none /tmp", "/usr/bin/umount /work", "/usr/bin/su -c id -u root"):
        assert seen[helper] != "exit 0", (helper, seen[helper])
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(seen["caps"][field], 16) == 0, seen["caps"]
    uid, euid = seen["uid"]
    assert seen["caps"]["NoNewPrivs"] == "1" and uid == euid and 1000 <= uid < 61000, seen
    # The episode's own filter refuses nested namespaces and mounts outright (EPERM, not a missing cap).
    assert seen["unshare(CLONE_NEWUSER)"] == "EPERM" and seen["mount"] == "EPERM", seen


def test_kernel_and_privileges_tool(server: Server, client: httpx.Client) -> None:
    episode, result, text = tool_attack(server, client, KEY, ATTACK_KERNEL, "")
    assert result["info"]["status"] == "ok", text
    check_kernel_report(report(text))
    check_tool_episode_goes_on(client, episode, result)


def test_kernel_and_privileges_model(server: Server, client: httpx.Client) -> None:
    tail = BREACHES + "print('caps:', _seen['caps']['CapEff'], _seen['caps']['NoNewPrivs'])\n"
    episode, result, text = model_attack(server, client, KEY, ATTACK_KERNEL, "", tail=tail)
    assert result["info"]["status"] == "ok"
    assert observation_of(text) == "breaches: []\ncaps: 0000000000000000 1", text
    check_model_episode_goes_on(client, episode, result)


def test_signals_to_the_agent(server: Server, client: httpx.Client) -> None:
    """SIGKILL to the agent (pid 1 of the episode's pid namespace) and ``kill(-1)``: the agent
    survives, the same sandbox answers the next call, no sandbox failure is counted."""
    failures = metric(client, "toolgym_sandbox_failures_total")
    episode, result, text = tool_attack(server, client, KEY, ATTACK_KILL_AGENT, "")
    assert result["info"]["status"] == "ok", text
    assert report(text)["parent_pid"] == 1, "the agent is pid 1 of the episode's pid namespace"
    check_tool_episode_goes_on(client, episode, result)
    episode, result, text = model_attack(server, client, KEY, ATTACK_KILL_AGENT, "")
    assert result["info"]["status"] == "ok", text
    check_model_episode_goes_on(client, episode, result)
    assert metric(client, "toolgym_sandbox_failures_total") == failures
    check_healthy(server, client)


# --- the namespace tier's own checks, on the backend directly --------------------------------------------
def run(box: Sandbox, code: str) -> str:
    result = box.run(RunRequest(code=code, limits=RunLimits(timeout_s=10.0)))
    assert result.status == "ok", result
    return result.stdout


PEEK = r'''
import json, os
seen = {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "uid": os.getuid(),
        "ns": {n: os.readlink("/proc/self/ns/" + n) for n in ("pid", "mnt", "user", "net", "ipc", "uts")}}
seen["files"] = sorted(os.path.join(d, f) for d in ("/work", "/tmp", "/dev/shm", "/dev/mqueue") for f in os.listdir(d))
print(json.dumps(seen))
'''


@pytest.fixture()
def backend(sandbox_image: str) -> Iterator[NamespaceBackend]:
    instance = f"ns-test-{uuid.uuid4().hex[:8]}"
    made = NamespaceBackend(image=sandbox_image, instance=instance, episodes_per_host=4, host_max_episodes=3)
    try:
        yield made
    finally:
        made.remove_owned(instance)
        made.close()


def test_two_episodes_in_one_host_share_nothing(backend: NamespaceBackend) -> None:
    first, second = backend.create(SandboxSpec(labels={})), backend.create(SandboxSpec(labels={}))
    assert first.id.split("/")[0] == second.id.split("/")[0], "both on one host container"
    run(first, "import os, subprocess\nfor d in ('/work', '/tmp', '/dev/shm'):\n"
               "    open(os.path.join(d, 'mine'), 'w').write('secret')\n"
               "subprocess.Popen(['sleep', '30'], start_new_session=True)\n")
    a, b = json.loads(run(first, PEEK)), json.loads(run(second, PEEK))
    assert b["files"] == ["/work/main.py"], "the other episode's files are not visible"
    assert "/work/mine" in a["files"] and a["uid"] != b["uid"]
    assert all(a["ns"][n] != b["ns"][n] for n in a["ns"]), (a["ns"], b["ns"])
    assert len(b["pids"]) <= 3 and b["pids"][0] == 1, f"only its own agent and run: {b['pids']}"
    first.close()
    second.close()


def test_a_host_is_recycled_after_n_episodes(backend: NamespaceBackend) -> None:
    boxes = [backend.create(SandboxSpec(labels={})) for _ in range(4)]
    hosts = [b.id.split("/")[0] for b in boxes]
    assert hosts[0] == hosts[1] == hosts[2] and hosts[3] != hosts[0], hosts
    for box in boxes[:3]:
        box.close()
    assert hosts[0] not in backend.hosts and backend.recycled >= 1
    assert subprocess.run(["docker", "inspect", hosts[0]], capture_output=True).returncode != 0, "removed"
    boxes[3].close()


def test_an_anomaly_recycles_the_host(backend: NamespaceBackend) -> None:
    """Every episode process killed from outside: the agent's stream ends, the sandbox fails,
    and its host container takes no new episode and goes once empty."""
    box = backend.create(SandboxSpec(labels={}))
    host = box.id.split("/")[0]
    kill = ("import os\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) not in (1, os.getpid()):\n"
            "        os.kill(int(p), 9)\n")
    subprocess.run(["docker", "exec", host, "python3", "-c", kill], check=True, timeout=30)
    with pytest.raises(Exception, match="sandbox"):
        run(box, "print(1)")
    box.close()
    deadline = time.monotonic() + 10
    while host in backend.hosts and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host not in backend.hosts and backend.recycled == 1
    assert backend.create(SandboxSpec(labels={})).id.split("/")[0] != host


def test_a_file_in_the_host_containers_own_dirs_recycles_it(backend: NamespaceBackend) -> None:
    """No episode can write to the host container's /dev/shm (each has its own): a file there means
    something reached the host, so the next close retires it and it goes once empty."""
    box = backend.create(SandboxSpec(labels={}))
    host = box.id.split("/")[0]
    subprocess.run(["docker", "exec", host, "python3", "-c", "open('/dev/shm/planted', 'w').write('x')"],
                   check=True, timeout=30)
    assert run(box, "import os; print(os.listdir('/dev/shm'))").strip() == "[]", "the episode's own /dev/shm"
    box.close()
    assert host not in backend.hosts and backend.recycled == 1


SECCOMP_PROBE = r'''
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
seen = {}
for name, nr, args in (("keyctl", 250, (0, 0, 0, 0)), ("bpf", 321, (0, 0, 0)), ("ptrace", 101, (0, 0, 0, 0)),
                       ("setns", 308, (0, 0)), ("unshare(CLONE_NEWCGROUP)", 272, (0x02000000,)),
                       ("perf_event_open", 298, (0, 0, 0, 0, 0)), ("io_uring_setup", 425, (1, 0))):
    rc = libc.syscall(nr, *args)
    seen[name] = "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(json.dumps(seen))
'''


def test_the_seccomp_profile_is_generated_and_refuses(sandbox_image: str) -> None:
    """The committed profile is what the generator writes; in a container under it (no episode
    filter), the calls it keeps out fail with EPERM while a plain namespace set works."""
    assert PROFILE_PATH.read_text(encoding="utf-8") == profile_text()
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers of the probe are x86_64's")
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", "65534:65534", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges", "--security-opt", f"seccomp={PROFILE_PATH}",
         sandbox_image, "sh", "-c", "python3 -c \"$0\" && unshare -Urnimu true && echo unshare-ok", SECCOMP_PROBE],
        capture_output=True, text=True, timeout=60)
    seen = json.loads(done.stdout.splitlines()[0])
    assert set(seen.values()) == {"EPERM"}, seen
    assert done.stdout.splitlines()[1] == "unshare-ok", done.stderr


SPAWN = r'''
import os, time
kids = []
for _ in range(N):
    pid = os.fork()
    if pid == 0:
        time.sleep(HOLD)
        os._exit(0)
    kids.append(pid)
print(len(kids))
for pid in kids:
    os.waitpid(pid, 0)
'''


def test_the_process_limit_is_each_episodes_own(backend: NamespaceBackend) -> None:
    """Every episode is uid 65534 to the host, yet RLIMIT_NPROC counts per user namespace: while
    one episode holds 30 processes, another in the same host container still gets its own 30
    (a shared count would refuse it at max_processes=40), and its own 41st is refused."""
    import threading

    first, second = backend.create(SandboxSpec(labels={})), backend.create(SandboxSpec(labels={}))
    assert first.id.split("/")[0] == second.id.split("/")[0]
    limits = RunLimits(timeout_s=20.0, max_processes=40)
    held: list[Any] = []
    holder = threading.Thread(target=lambda: held.append(first.run(RunRequest(
        code=SPAWN.replace("N", "30").replace("HOLD", "4"), limits=limits))))
    holder.start()
    time.sleep(1.5)
    second_result = second.run(RunRequest(code=SPAWN.replace("N", "30").replace("HOLD", "0.5"), limits=limits))
    over = second.run(RunRequest(code=SPAWN.replace("N", "41").replace("HOLD", "0.5"), limits=limits))
    holder.join(timeout=30)
    assert held and held[0].stdout.strip() == "30", held
    assert second_result.status == "ok" and second_result.stdout.strip() == "30", second_result
    assert "BlockingIOError" in over.stderr or "Resource temporarily unavailable" in over.stderr, over
