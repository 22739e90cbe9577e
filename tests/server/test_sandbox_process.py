"""The process backend directly (the embedded fallback without Docker). It gives limits,
not isolation; run as root it still never runs code as root (docs/architecture.md: the kernel does not
apply RLIMIT_NPROC to root) and gives each sandbox its own uid and no network."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator

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

from toolgym.envs.runner import FunctionCall, RunRequest
from toolgym.errors import SandboxError
from toolgym.server.sandbox.base import Sandbox, SandboxBackend, SandboxSpec

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="per-sandbox uids need the tests to run as root")


def spec(max_processes: int = 32) -> SandboxSpec:
    return SandboxSpec(labels={"toolgym.episode": f"test-{uuid.uuid4().hex[:8]}"}, max_processes=max_processes)


@pytest.fixture
def box(process_backend: SandboxBackend) -> Iterator[Sandbox]:
    sandbox = process_backend.create(spec())
    yield sandbox
    sandbox.close()


def test_backend_says_it_does_not_isolate(process_backend: SandboxBackend) -> None:
    assert process_backend.name == "process" and process_backend.isolated is False


@needs_root
def test_code_never_runs_as_root(process_backend: SandboxBackend) -> None:
    first = process_backend.create(spec())
    second = process_backend.create(spec())
    try:
        a, b = probe(first), probe(second)
        for seen in (a, b):
            assert seen["uid"] != 0 and seen["euid"] != 0 and seen["gid"] != 0, seen
            assert 0 not in seen["groups"], seen
            assert int(seen["cap_eff"], 16) == 0, f"CapEff {seen['cap_eff']}"
        assert a["uid"] != b["uid"], "each sandbox gets its own uid"
        assert a["write_etc"] != "ok" and a["write_usr"] != "ok"
        assert a["write_cwd"] == "ok"
        assert a["cwd"] != b["cwd"]
        # One sandbox cannot read another's work dir.
        run(second, "open('secret.txt', 'w').write('mine')")
        peek = run(first, f"print(open({b['cwd'] + '/secret.txt'!r}).read())")
        assert peek.status == "error" and "Permission" in peek.stderr, peek
    finally:
        first.close()
        second.close()


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare(1): the backend cannot cut the network")
def test_no_network_not_even_the_hosts_loopback(box: Sandbox) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run(box, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('in')")
    assert result.status == "error" and "in" not in result.stdout, result
    assert probe(box)["net"] != "connected"


@needs_root
def test_nproc_bounds_a_fork_bomb(box: Sandbox) -> None:
    result = run(box, FORK_COUNT, timeout_s=5)
    assert result.status == "ok", result
    assert 0 < int(result.stdout) < 32, f"forked {result.stdout.strip()} processes under max_processes=32"
    leftovers(box)


@needs_root
def test_a_runs_process_limit_counts_its_own_tree(process_backend: SandboxBackend) -> None:
    """RLIMIT_NPROC counts every process of the uid, the agent too: the agent allows one
    more, so the run itself holds exactly ``max_processes`` (SimpleTIR's 50)."""
    sandbox = process_backend.create(spec(max_processes=64))
    try:
        check_run_process_limit(sandbox, 64)
    finally:
        sandbox.close()


def test_a_timeout_stops_the_run_and_kills_what_it_spawned(box: Sandbox) -> None:
    if not AS_ROOT:
        pytest.skip("without a per-sandbox uid only the process group is killed")
    check_timeout_kills_everything(box)


def test_output_caps_with_truncation_flags(box: Sandbox) -> None:
    check_output_caps(box)


def test_close_is_idempotent_and_ends_the_agent(process_backend: SandboxBackend) -> None:
    sandbox = process_backend.create(spec())
    seen = probe(sandbox)
    agent_pid = int(run(sandbox, "import os; print(os.getppid())").stdout)
    assert sandbox.close() is True
    assert sandbox.close() is False
    assert not os.path.exists(seen["cwd"]), "the work dir is removed"
    with pytest.raises(ProcessLookupError):
        os.kill(agent_pid, 0)
    with pytest.raises(SandboxError):
        run(sandbox, "print(1)")


@needs_root
def test_two_backends_on_one_host_never_share_a_uid() -> None:
    """Two servers on one host (or a server and its tests) each run a process backend: a
    shared uid would let one sandbox's clean-up (``kill(-1)`` as that uid) end the other's
    agent, and the uids' RLIMIT_NPROC would count both."""
    from toolgym.server.sandbox.process import ProcessBackend

    first, second = ProcessBackend(), ProcessBackend()
    try:
        a, b = first.create(spec()), second.create(spec())
        uid_a, uid_b = probe(a)["uid"], probe(b)["uid"]
        assert uid_a != uid_b
        # A run that times out kills every process of its uid; the other sandbox lives on.
        assert run(a, "while True:\n    pass", timeout_s=0.5).status == "timeout"
        assert run(b, "print('b lives')").stdout == "b lives\n"
        assert run(a, "print('a lives')").stdout == "a lives\n"
    finally:
        first.close()
        second.close()


@needs_root
def test_a_closed_sandboxs_uid_is_not_reused_at_once(process_backend: SandboxBackend) -> None:
    """Killed processes stay zombies (and count against RLIMIT_NPROC) until the host's init
    reaps them, so the next sandbox must not start on that uid with a full process table."""
    first = process_backend.create(spec(max_processes=16))
    assert 0 < int(run(first, FORK_COUNT, timeout_s=5).stdout) < 16
    uid = probe(first)["uid"]
    first.close()
    second = process_backend.create(spec(max_processes=16))
    try:
        assert probe(second)["uid"] != uid
        assert 0 < int(run(second, FORK_COUNT, timeout_s=5).stdout) < 16
    finally:
        second.close()


def test_run_many_runs_a_turns_calls_at_once(box: Sandbox) -> None:
    check_run_many(box)


def test_runs_forked_from_the_warm_agent_share_nothing(box: Sandbox) -> None:
    check_runs_share_nothing(box)


def test_a_runs_end_is_reported_whatever_its_code_does_with_the_done_pipe(box: Sandbox) -> None:
    check_run_end_is_reported(box)


def _standby_pids(box: Sandbox) -> list[int]:
    """The agent's idle children (its pre-forked standby), read from /proc on the host."""
    agent = int(getattr(box, "hello", {})["pid"])
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == agent and fields[0] != b"Z":
                found.append(int(entry))
    return found


def test_a_dead_standby_is_replaced_and_the_run_is_not_touched(box: Sandbox) -> None:
    """The agent keeps one prepared child ahead of the next run. Dead (killed from outside, say)
    it is not a result: the run forks afresh, and a new standby follows."""
    request = RunRequest(code="def f(x):\n    return x * 2\n", call=FunctionCall("f", {"x": 21}))
    assert box.run(request).value == "42"
    for _ in range(3):
        for _ in range(500):  # the agent forks it just after its reply
            standby = _standby_pids(box)
            if standby:
                break
            time.sleep(0.01)
        assert len(standby) == 1, standby
        os.kill(standby[0], signal.SIGKILL)
        for _ in range(500):  # until it is dead (a zombie), not merely signalled
            if standby[0] not in _standby_pids(box):
                break
            time.sleep(0.01)
        result = box.run(request)
        assert result.status == "ok" and result.value == "42", result
        assert box.ping()
