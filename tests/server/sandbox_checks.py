"""Code the sandbox tests run inside a sandbox, and the checks on what it reports; shared by
test_sandbox_docker.py and test_sandbox_process.py."""

from __future__ import annotations

import json
import time
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


NAP = "import time\n\ndef nap(s, tag):\n    time.sleep(s)\n    return {'tag': tag}\n"
BOOM = "def boom(x):\n    raise KeyError(x)\n"
SPIN = "def spin():\n    while True:\n        pass\n"
LOUD = "import sys\n\ndef loud(n):\n    print('o' * n)\n    sys.stderr.write('e' * n)\n    return n\n"


def call(code: str, function: str, arguments: dict[str, Any], **limits: Any) -> RunRequest:
    limits.setdefault("timeout_s", 5.0)
    return RunRequest(code=code, call=FunctionCall(function, arguments), limits=RunLimits(**limits))


def same(a: RunResult, b: RunResult) -> bool:
    """Equal but for the wall time."""
    return {**vars(a), "duration_s": 0} == {**vars(b), "duration_s": 0}


def check_run_many(box: Sandbox) -> None:
    """``run_many`` runs a turn's calls at once, each its own process under its own limits.

    Two calls that each sleep 0.5 s take well under 1 s together; a batch mixing a value, an
    exception, a timeout, capped output and a script returns, in call order, exactly what each
    run returns alone; and the batch leaves nothing behind.
    """
    naps = [call(NAP, "nap", {"s": 0.5, "tag": i}) for i in range(2)]
    box.run_many(naps)  # a first batch warms the agent's code cache
    started = time.monotonic()
    results = box.run_many(naps)
    took = time.monotonic() - started
    assert [r.value for r in results] == ['{"tag": 0}', '{"tag": 1}'], results
    assert took < 0.9, f"two 0.5 s calls took {took:.2f} s together"
    batch = [
        call(NAP, "nap", {"s": 0.05, "tag": "a"}),
        call(BOOM, "boom", {"x": "k"}),
        call(SPIN, "spin", {}, timeout_s=0.5),
        call(LOUD, "loud", {"n": 3000}, max_output_bytes=100),
        RunRequest(code="import sys\nprint('script')\nsys.exit(3)\n", limits=RunLimits(timeout_s=5)),
        call(NAP, "nap", {"s": 0, "tag": "z"}, max_value_bytes=4),
    ]
    together = box.run_many(batch)
    alone = [box.run(r) for r in batch]
    assert [r.status for r in together] == ["ok", "error", "timeout", "ok", "error", "error"], together
    for t, a in zip(together, alone, strict=True):
        assert same(t, a), (t, a)
    assert together[3].stdout == "o" * 50 + "o" * 49 + "\n" and together[3].stdout_truncated
    assert together[5].error_type == "OutputTooLarge"
    assert box.run_many([]) == [] and same(box.run_many(batch[:1])[0], alone[0])
    leftovers(box)


STATE = r'''
import json, os, random, sys
def touch():
    seen = {"pid": os.getpid(), "r": random.random(), "marked": hasattr(json, "toolgym_mark"),
            "mods": "toolgym_fake" in sys.modules}
    json.toolgym_mark = 1
    sys.modules["toolgym_fake"] = json
    random.seed(0)
    return seen
'''


def check_runs_share_nothing(box: Sandbox) -> None:
    """Runs forked from the warm agent share no state: each is its own process, sees modules as
    fresh, and draws its own random numbers (a forked ``random`` is reseeded), whatever the
    runs before it changed."""
    seen = [json.loads(box.run(call(STATE, "touch", {})).value or "{}") for _ in range(4)]
    assert len({s["pid"] for s in seen}) == 4, seen
    assert len({s["r"] for s in seen}) == 4, seen
    assert not any(s["marked"] or s["mods"] for s in seen), seen


FDS_SEEN = '''
import fcntl, os
def seen():
    fds = []
    for fd in range(64):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    return {"fds": fds, "done_cloexec": bool(fcntl.fcntl(4, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)}
'''

GRANDCHILD_WRITES_LATE = '''
import os, time
if os.fork() == 0:
    time.sleep(0.05)
    print("late", flush=True)
    os._exit(0)
print("early", flush=True)
'''
"""The script ends at once; its child, still holding stdout, prints within the exit grace."""


def check_run_end_is_reported(box: Sandbox) -> None:
    """A run tells the agent its status on a done pipe (fd 4, close-on-exec) before it exits.

    Whatever the code does with that descriptor, each run still gets its own status, output and
    value: code that closes it, puts a file of its own there, writes it early (which ends its
    run, as ``os._exit`` would), exits by ``os._exit`` or is killed; a grandchild holding stdout
    still gets the exit grace, and a fork bomb left by a run that ended well is gone before the
    next run.
    """
    script = RunRequest(code=FDS_SEEN + "import json\nprint(json.dumps(seen()))\n", limits=RunLimits(timeout_s=5))
    seen = json.loads(box.run(script).stdout)
    assert seen == {"fds": [0, 1, 2, 4], "done_cloexec": True}, seen
    result = box.run(call(FDS_SEEN, "seen", {}))
    assert result.status == "ok" and json.loads(result.value or "") == {"fds": [0, 1, 2, 3, 4], "done_cloexec": True}

    closes = "import os\ndef f(x):\n    os.close(4)\n    print('closed')\n    return x + 1\n"
    result = box.run(call(closes, "f", {"x": 41}))
    assert (result.status, result.value, result.stdout) == ("ok", "42", "closed\n"), result
    # A file of the code's own on fd 4: the agent's status byte must not land in it.
    squats = ("import os\ndef f():\n    os.close(4)\n"
              "    fd = os.open('squat.txt', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
              "    assert fd == 4\n    os.write(fd, b'mine')\n    return 'ok'\n")
    assert box.run(call(squats, "f", {})).value == "ok"
    assert run(box, "print(open('squat.txt', 'rb').read())").stdout == "b'mine'\n"

    early = "import os, time\nprint('before', flush=True)\nos.write(4, bytes([7]))\ntime.sleep(5)\nprint('after')\n"
    result = run(box, early)
    assert (result.status, result.error, result.stdout) == ("error", "exit status 7", "before\n"), result
    assert result.duration_s < 2.0, result.duration_s
    result = run(box, "import os\nprint('x', flush=True)\nos._exit(3)\n")
    assert (result.status, result.error, result.stdout) == ("error", "exit status 3", "x\n"), result
    result = run(box, "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    assert result.status == "killed" and "SIGTERM" in (result.error or ""), result
    result = run(box, "import sys\nsys.exit(5)\n")
    assert (result.status, result.error) == ("error", "exit status 5"), result
    result = box.run(call("def f():\n    raise ValueError('no')\n", "f", {}))
    assert (result.status, result.error, result.error_type) == ("error", "no", "ValueError"), result

    result = run(box, GRANDCHILD_WRITES_LATE)
    assert result.status == "ok" and result.stdout == "early\nlate\n", result
    bomb = ("import os, time\nfor _ in range(8):\n    if os.fork() == 0:\n        os.setsid()\n"
            "        while True:\n            time.sleep(1)\nprint('left them')\n")
    result = run(box, bomb)
    assert result.status == "ok" and result.stdout == "left them\n", result
    leftovers(box)
