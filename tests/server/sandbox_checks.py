"""Code the sandbox tests run inside a sandbox, and the checks on what it reports; shared by
test_sandbox_docker.py and test_sandbox_process.py."""

from __future__ import annotations

import json
from typing import Any

from toolgym.envs.runner import FunctionCall, RunLimits, RunRequest, RunResult
from toolgym.server.sandbox.base import Sandbox

PROBE = r'''
import errno, json, os, socket
def status_field(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
def first_line(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            continue
def can_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def net():
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=0.5).close()
        return "connected"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))
print(json.dumps({
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "cap_eff": status_field("CapEff"), "cap_prm": status_field("CapPrm"), "cap_bnd": status_field("CapBnd"),
    "cap_amb": status_field("CapAmb"), "no_new_privs": status_field("NoNewPrivs"),
    "pids_max": first_line("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "memory_max": first_line("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "interfaces": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else None,
    "net": net(), "cwd": os.getcwd(),
    "write_etc": can_write("/etc/toolgym-probe"), "write_usr": can_write("/usr/lib/toolgym-probe"),
    "write_root": can_write("/toolgym-probe"), "write_cwd": can_write("probe.txt"),
    "write_tmp": can_write("/tmp/toolgym-probe"),
}))
'''

LEFTOVERS = r'''
import os
me, parent = os.getpid(), os.getppid()
uid = os.getuid()
left = []
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) in (me, parent, 1):
        continue
    try:
        if os.stat("/proc/" + entry).st_uid != uid:
            continue
        with open("/proc/%s/stat" % entry) as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        with open("/proc/%s/cmdline" % entry, "rb") as fh:
            left.append(fh.read().replace(b"\0", b" ").decode(errors="replace"))
    except OSError:
        continue
print(len(left), left)
'''
"""Prints how many processes of this uid are alive besides this run, its agent and pid 1
(``ps`` read from /proc)."""

ESCAPE_AND_SPIN = r'''
import os, signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            time.sleep(3600)
        os._exit(0)
print("spawned", flush=True)
while True:
    pass
'''

DAEMON_THEN_EXIT = r'''
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(3600)
    os._exit(0)
print("left a daemon")
'''

FORK_COUNT = r'''
import os, time
n = 0
for _ in range(400):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print(n)
'''


def run(box: Sandbox, code: str, timeout_s: float = 5.0, **limits: Any) -> RunResult:
    return box.run(RunRequest(code=code, limits=RunLimits(timeout_s=timeout_s, **limits)))


def probe(box: Sandbox) -> dict[str, Any]:
    result = run(box, PROBE)
    assert result.status == "ok", result
    return dict(json.loads(result.stdout))


def leftovers(box: Sandbox) -> int:
    result = run(box, LEFTOVERS)
    assert result.status == "ok", result
    count, _, rest = result.stdout.partition(" ")
    assert int(count) == 0, f"processes left behind: {rest}"
    return int(count)


def check_timeout_kills_everything(box: Sandbox) -> None:
    """A run stopped at its timeout takes every process it started with it, even ones that
    left its session or ignore SIGTERM; a run that ends leaves no daemon either."""
    result = run(box, ESCAPE_AND_SPIN, timeout_s=1.0)
    assert result.status == "timeout", result
    assert "spawned" in result.stdout
    assert 0.9 <= result.duration_s < 4.0, result.duration_s
    assert "timed out" in (result.error or "")
    leftovers(box)
    result = run(box, DAEMON_THEN_EXIT)
    assert result.status == "ok" and "left a daemon" in result.stdout, result
    leftovers(box)


def check_output_caps(box: Sandbox) -> None:
    """A stream over ``max_output_bytes`` keeps its first and its last half (so its real end
    survives) and says it was cut; a return value is never cut: over ``max_value_bytes`` it is
    an ``OutputTooLarge`` error with ``value_truncated`` set."""
    code = "import sys\nprint('h' * 600 + 'o' * 100000 + 't' * 600)\nsys.stderr.write('e' * 50000 + 'END')\n"
    result = run(box, code, max_output_bytes=1000)
    assert result.status == "ok", result
    assert result.stdout == "h" * 500 + "t" * 499 + "\n" and result.stdout_truncated
    assert result.stderr == "e" * 997 + "END" and result.stderr_truncated
    small = run(box, "print('short')", max_output_bytes=1000)
    assert small.stdout == "short\n" and not small.stdout_truncated and not small.stderr_truncated
    exact = run(box, "import sys\nsys.stdout.write('x' * 1000)", max_output_bytes=1000)
    assert exact.stdout == "x" * 1000 and not exact.stdout_truncated
    # The return value is not a stream: the cap on streams does not touch it.
    whole = box.run(RunRequest(code="def f():\n    return 'v' * 5000 + 'END'\n", call=FunctionCall("f", {}),
                               limits=RunLimits(timeout_s=5, max_output_bytes=1000)))
    assert whole.status == "ok" and whole.value == "v" * 5000 + "END" and not whole.value_truncated, whole
    # Over its own cap it is an error, never a silently cut value.
    big = box.run(RunRequest(code="def f():\n    return 'v' * 5000\n", call=FunctionCall("f", {}),
                             limits=RunLimits(timeout_s=5, max_value_bytes=1000)))
    assert big.status == "error" and big.value is None and big.error_type == "OutputTooLarge", big
    assert big.value_truncated and "max_value_bytes=1000" in (big.error or ""), big
    # A flood that never ends is read and dropped until the timeout: the run still stops.
    flood = run(box, "import sys\nwhile True:\n    sys.stdout.write('f' * 65536)\n", timeout_s=1.0,
                max_output_bytes=2000)
    assert flood.status == "timeout" and flood.stdout_truncated and flood.stdout == "f" * 2000


HOLD_100 = r'''
import os, time
held = 1
for _ in range(99):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    held += 1
print(held)
'''
"""Tries to hold 100 processes at once (itself and 99 children); prints how many it holds."""


def check_run_process_limit(box: Sandbox, sandbox_limit: int) -> None:
    """``RunLimits.max_processes`` bounds the run's own tree (its process and every process
    it starts) at exactly that many, whatever else the sandbox holds (its agent). The
    sandbox's own limit (``sandbox_limit``, counting the agent) stays a ceiling, and a run
    without ``max_processes`` gets the whole of it back."""
    for limit, held in ((50, 50), (7, 7), (None, sandbox_limit - 1), (50, 50), (500, sandbox_limit - 1)):
        result = run(box, HOLD_100, max_processes=limit)
        assert result.status == "ok", result
        assert int(result.stdout) == held, f"held {result.stdout.strip()} processes under max_processes={limit}"
        leftovers(box)
