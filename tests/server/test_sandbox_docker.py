"""The Docker backend directly: the limits of docs/architecture.md "Sandboxes" as seen from inside a
real container and from the engine, runs that time out, output caps, and teardown."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sandbox_checks import (
    FORK_COUNT,
    check_output_caps,
    check_run_end_is_reported,
    check_run_many,
    check_run_process_limit,
    check_runs_share_nothing,
    check_timeout_kills_everything,
    leftovers,
    probe,
    run,
)
from server_kit import docker

from toolgym.envs.runner import FunctionCall, RunLimits, RunRequest
from toolgym.errors import SandboxError
from toolgym.server.sandbox.base import Sandbox, SandboxBackend, SandboxSpec
from toolgym.server.sandbox.sockchan import CONTAINER_SOCKET

pytestmark = pytest.mark.docker

MiB = 1024 * 1024


def labels() -> dict[str, str]:
    return {"toolgym.episode": f"test-{uuid.uuid4().hex[:8]}", "toolgym.owner": "tester"}


@pytest.fixture(scope="module")
def box(docker_backend: SandboxBackend) -> Iterator[Sandbox]:
    """One container for the checks that do not disturb it."""
    sandbox = docker_backend.create(SandboxSpec(labels=labels(), memory_bytes=256 * MiB, max_processes=48,
                                                cpus=0.5))
    yield sandbox
    sandbox.close()


@pytest.fixture
def fresh(docker_backend: SandboxBackend) -> Iterator[Sandbox]:
    sandbox = docker_backend.create(SandboxSpec(labels=labels(), memory_bytes=192 * MiB, max_processes=32))
    yield sandbox
    sandbox.close()


def inspect(sandbox: Sandbox) -> dict[str, Any]:
    with docker() as client:
        return dict(client.api.inspect_container(sandbox.id))


def test_limits_seen_from_inside(box: Sandbox) -> None:
    seen = probe(box)
    assert seen["uid"] == 65534 and seen["euid"] == 65534 and seen["gid"] == 65534, seen
    assert 0 not in seen["groups"]
    for field in ("cap_eff", "cap_prm", "cap_bnd", "cap_amb"):
        assert int(seen[field], 16) == 0, f"{field} = {seen[field]}: capabilities must all be dropped"
    assert seen["no_new_privs"] == "1"
    assert seen["interfaces"] == ["lo"], "no network interface but loopback"
    assert seen["net"] in ("ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM"), seen["net"]
    for path in ("write_etc", "write_usr", "write_root"):
        assert seen[path] == "EROFS", f"{path}: the root file system must be read-only, got {seen[path]}"
    assert seen["write_cwd"] == "ok" and seen["write_tmp"] == "ok", "the tmpfs work dirs stay writable"
    assert seen["cwd"] == "/work"
    assert seen["pids_max"] == "48"
    assert int(seen["memory_max"]) == 256 * MiB


def test_limits_seen_from_the_engine(box: Sandbox, session_label: str) -> None:
    info = inspect(box)
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 48
    assert host["Memory"] == 256 * MiB and host["MemorySwap"] == 256 * MiB, "no swap beyond the limit"
    assert host["NanoCpus"] == 500_000_000
    assert host["LogConfig"]["Type"] == "none"
    assert set(host["Tmpfs"]) == {"/work", "/tmp"}
    mounts = [(m["Type"], m["Destination"], m["RW"]) for m in info["Mounts"]]
    # Nothing from the host is mounted, but the socket channel's one read-only socket file.
    assert not host.get("Binds") and mounts in ([], [("bind", CONTAINER_SOCKET, False)]), mounts
    assert info["Config"]["User"] == "65534:65534"
    env = "\n".join(info["Config"]["Env"] or [])
    assert "TOOLGYM" not in env and "KEY" not in env.upper()
    got = info["Config"]["Labels"]
    assert got["toolgym.managed"] == "1" and got["toolgym.instance"] == session_label
    assert got["toolgym.episode"].startswith("test-") and got["toolgym.owner"] == "tester"


def test_agent_is_out_of_reach_of_sandboxed_code(box: Sandbox) -> None:
    """Code runs as the agent's uid: it must neither end the agent with a signal nor reach
    its protocol stream through /proc (a forged or garbled reply is a sandbox failure)."""
    attack = (
        "import os, signal\n"
        f"for sig in ({int(signal.SIGINT)}, {int(signal.SIGTERM)}, {int(signal.SIGHUP)}, {int(signal.SIGQUIT)}):\n"
        "    os.kill(1, sig)\n"
        "for fd in (0, 1, 2):\n"
        "    try:\n"
        "        open('/proc/1/fd/%d' % fd, 'w').write('{\"id\": 99}\\n')\n"
        "        print('wrote', fd)\n"
        "    except OSError as exc:\n"
        "        print('refused', fd, type(exc).__name__)\n"
    )
    result = run(box, attack)
    assert result.status == "ok", result
    assert "wrote" not in result.stdout, result.stdout
    assert result.stdout.count("refused") == 3
    assert run(box, "print('alive')").stdout == "alive\n"


def test_a_timeout_stops_the_run_and_kills_what_it_spawned(box: Sandbox) -> None:
    check_timeout_kills_everything(box)


def test_output_caps_with_truncation_flags(box: Sandbox) -> None:
    check_output_caps(box)


def test_function_calls_and_user_errors_are_data(box: Sandbox) -> None:
    code = "def add(a, b):\n    return {'sum': a + b, 'list': [a, b]}\n"
    ok = box.run(RunRequest(code=code, call=FunctionCall("add", {"a": 2, "b": 3}), limits=RunLimits(timeout_s=5)))
    assert ok.status == "ok" and ok.value == '{"sum": 5, "list": [2, 3]}'
    bad = box.run(RunRequest(code=code, call=FunctionCall("add", {"a": 2}), limits=RunLimits(timeout_s=5)))
    assert bad.status == "error" and bad.error_type == "TypeError" and "missing 1 required" in (bad.error or "")
    missing = box.run(RunRequest(code=code, call=FunctionCall("nope", {}), limits=RunLimits(timeout_s=5)))
    assert missing.status == "error" and missing.error_type == "NameError"
    crash = run(box, "raise SystemExit(3)")
    assert crash.status == "error" and crash.error == "exit status 3"


def test_pids_limit_bounds_a_fork_bomb(fresh: Sandbox) -> None:
    result = run(fresh, FORK_COUNT, timeout_s=5)
    assert result.status == "ok", result
    assert 0 < int(result.stdout) < 32, f"forked {result.stdout.strip()} processes under pids_limit=32"
    leftovers(fresh)


def test_a_runs_process_limit_counts_its_own_tree(docker_backend: SandboxBackend) -> None:
    """A run's ``max_processes`` becomes the container's pids limit plus one (the agent, the
    container's only other process), so the run itself holds exactly that many."""
    sandbox = docker_backend.create(SandboxSpec(labels=labels(), max_processes=64))
    try:
        check_run_process_limit(sandbox, 64)
        assert inspect(sandbox)["HostConfig"]["PidsLimit"] == 64, "the sandbox's own limit is back"
    finally:
        sandbox.close()


def test_memory_limit_kills_the_run_not_the_sandbox(fresh: Sandbox) -> None:
    # RLIMIT_AS is raised past the container's 192 MiB, so the cgroup limit is what stops it.
    hog = run(fresh, "data = b'x' * (400 * 1024 * 1024)\nprint(len(data))", timeout_s=10,
              memory_bytes=2048 * MiB)
    assert hog.status in ("killed", "error"), hog
    assert "419430400" not in hog.stdout
    assert run(fresh, "print('after')").stdout == "after\n"


def test_close_is_idempotent_and_removes_the_container(docker_backend: SandboxBackend) -> None:
    sandbox = docker_backend.create(SandboxSpec(labels=labels()))
    name = sandbox.id
    assert run(sandbox, "print(1)").stdout == "1\n"
    assert sandbox.close() is True
    assert sandbox.close() is False
    with docker() as client:
        assert client.api.containers(all=True, filters={"name": name}) == []
    with pytest.raises(SandboxError):
        run(sandbox, "print(1)")


def test_container_killed_from_outside_is_a_sandbox_error(docker_backend: SandboxBackend) -> None:
    sandbox = docker_backend.create(SandboxSpec(labels=labels()))
    try:
        with docker() as client:
            client.api.kill(sandbox.id)
        with pytest.raises(SandboxError):
            run(sandbox, "print('never')")
        with pytest.raises(SandboxError):
            run(sandbox, "print('still never')")
    finally:
        sandbox.close()
    assert sandbox.close() is False


def test_remove_owned_only_touches_its_instance(docker_backend: SandboxBackend, session_label: str,
                                                sandbox_image: str) -> None:
    from toolgym.server.sandbox.docker import DockerBackend

    other_instance = f"{session_label}-other-{uuid.uuid4().hex[:4]}"
    other = DockerBackend(image=sandbox_image, instance=other_instance)
    try:
        mine = docker_backend.create(SandboxSpec(labels=labels()))
        theirs = other.create(SandboxSpec(labels=labels()))
        assert other.remove_owned(other_instance) == 1
        assert run(mine, "print('mine survives')").stdout == "mine survives\n"
        with pytest.raises(SandboxError):
            run(theirs, "print(1)")
        assert theirs.close() is False
        assert mine.close() is True
    finally:
        other.remove_owned(other_instance)
        other.close()


def test_work_dir_is_writable_and_kept_between_runs(box: Sandbox) -> None:
    wrote = run(box, "open('note.txt', 'w').write('kept')\nimport os\nprint(os.stat('.').st_uid)")
    assert wrote.status == "ok", wrote
    assert run(box, "print(open('/work/note.txt').read())").stdout == "kept\n"


def test_run_many_runs_a_turns_calls_at_once(box: Sandbox) -> None:
    check_run_many(box)


def test_runs_forked_from_the_warm_agent_share_nothing(box: Sandbox) -> None:
    check_runs_share_nothing(box)


def test_a_runs_end_is_reported_whatever_its_code_does_with_the_done_pipe(box: Sandbox) -> None:
    check_run_end_is_reported(box)
