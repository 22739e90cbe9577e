"""ToolGym's sandbox agent: a small, stdlib-only program that runs inside every sandbox.

The server starts it once per sandbox (``python3 -u -c <this source> --workdir DIR``) and
talks to it over its stdin/stdout, one JSON object per line, for the sandbox's whole life.
That single persistent stream is why a tool call costs about a millisecond instead of a
``docker exec``.

Requests::

    {"id": 7, "op": "run", "code": "...", "call": {"function": "f", "arguments": {...}} | null,
     "timeout_s": 10.0, "memory_bytes": 536870912, "max_output_bytes": 1048576,
     "max_value_bytes": 16777216, "max_processes": 50 | null}
    {"id": 8, "op": "run_many", "runs": [<the fields of a run, without op and id>, ...]}
    {"id": 9, "op": "ping"}

A ``run`` answers with its result; ``run_many`` (1 to ``MAX_BATCH`` runs: the parallel calls of
one turn) starts every run before waiting on any and answers ``{"results": [...]}`` in request
order, each run under its own limits and deadline. Runs of a batch share the sandbox's own
limits (memory, a pids limit, the uid's process count) as they share its work dir.

Every run is a fresh process: it starts its own session, gets the limits (address space, CPU,
open files, file size, processes), a clean stdin, its stdout/stderr on pipes and its work dir as
cwd. The agent is the zygote: at start it imports the standard modules tool code commonly needs
(``WARM_MODULES``), and it keeps the code object of tool code a child of it has already run
(``_Warm``), so a run is a fork of a warm process that finds its imports done and its code
compiled. One prepared child waits ahead of the next run (``_Standby``): forked after the
previous run was cleaned up (which follows the reply, so the fork does not compete for the CPU
with the reader of that reply) unless the next request is already waiting, already in its
own session with its pipes and environment, it takes the request line as it came, sets that
run's limits and runs it, so the fork is off the call's clock (a request already waiting gets a
fresh fork instead). Runs never share a process: the agent itself runs no code, and each child
serves one run. Scripts take the same path: the process the code sees is the one a fork of the
agent gives. The agent freezes its heap (``gc.freeze``) before each fork, so a child's
collections never walk, and so never copy, the agent's pages. The child keeps its collector on,
as under ``python3 main.py``: turning it off would save time on code that allocates much, but
its cyclic garbage would then only grow, against the run's memory limit.

A run's process ends by writing its exit status, one byte, on a done pipe (fd 4) after closing
its stdout, stderr and value pipe, then exiting (``_end``): the agent takes that byte as the
exit and does not wait for the kernel to tear the forked interpreter down (most of a
millisecond). A run that ends any other way (``os._exit``, a signal, a timeout) is ended by its
exit, as is a run whose pipes some other process still holds (after the exit grace).

Plain code runs as ``python3 main.py`` would run it (SimpleTIR's sandbox runs model code that
way): it is written to ``main.py`` in the work dir and executed from that file as ``__main__``,
so warnings and tracebacks show its source lines. A ``call`` defines the code and calls
``function(**arguments)``.

The agent reads the pipes (and drains them, so a flood never blocks the child), keeping of each
stream the first and the last half of ``max_output_bytes``, so the real end of a long output
survives; a return value is kept whole up to ``max_value_bytes`` and is an error beyond it,
never a cut value. It stops the run at ``timeout_s``, and then kills whatever the run left
behind: the child's process group, and with ``--kill-all`` every process of the agent's user
(``kill(-1)``, after the last run of a batch), which also ends a fork bomb that escaped the
group. ``--kill-all`` is only safe where the agent's uid belongs to this sandbox alone (a
container, or a per-sandbox uid). The reply goes out first: that sweep, and the reaping of the
batch's children, come right after it, before the agent reads the next request. So the next run
still starts with nothing of the last one alive or unreaped, but what a run left behind may
outlive its reply by that sweep's time (a fraction of a millisecond, more for a fork bomb).

``--nproc N`` (given only where the uid is the sandbox's alone) sets ``RLIMIT_NPROC``, which
counts every process and thread of the uid, the agent included: a run's ``max_processes`` M
becomes ``min(N, M + 1)``, so the run's own tree holds exactly M, SimpleTIR's
``rlimit nproc 50`` for a user with nothing else running. The agent is a child subreaper and
reaps as it goes, so dead orphans of earlier runs never count against the next. (In Docker the
uid is shared by every container on the host, so there the backend sets the container's pids
limit instead; see ``AgentSandbox``.)

The agent never trusts the code: nothing the child prints reaches the protocol stream.
Python 3.8+; no imports beyond the standard library.

Size: about 1,100 lines, over the project's ~400-line guideline on purpose. The agent travels
into each sandbox as one ``python3 -c`` source, with nothing installed beside it, so it cannot
import helpers of its own: it has to be one file, and one that runs on any Python 3.8.
"""

import builtins
import gc
import io
import json
import os
import resource
import select
import signal
import sys
import time
import types

PROTOCOL = 1
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_BATCH = 64
"""The most runs one ``run_many`` may start at once."""
EXIT_GRACE_S = 0.2
"""After the child exits, how long to wait for descendants still holding its pipes."""


PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
MAIN_FILE = "main.py"
_libc = None


def _prctl(option, value):
    """Best effort: without ctypes, nothing changes. Whether the call succeeded."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(option, value, 0, 0, 0) == 0
    except Exception:
        return False


def _set_dumpable(on):
    """Make the agent (un)dumpable: a non-dumpable agent is out of reach of the code it runs.

    Sandboxed code runs as the agent's uid. /proc/<agent>/fd (its protocol stream: forged or
    garbled replies) and ptrace of a non-dumpable agent need a capability the sandbox does not
    have. Each child is made dumpable again, so the clean-up still finds it by uid in /proc. Best
    effort: without ctypes, nothing changes.
    """
    _prctl(PR_SET_DUMPABLE, 1 if on else 0)


def _set_limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


DONE_FD = 4
"""Where a run writes its exit status, one byte, as its very last act (``_end``); close-on-exec."""
CONTROL_FD = 5
"""Where a standby child reads its one request (``_Standby``); closed before the code runs."""
_DONE_ID = [None]
"""In a run's process: ``(st_dev, st_ino)`` of the done pipe, so ``_end`` never writes elsewhere."""


def _prepare(fds, workdir, control=None):
    """In a forked child, set up what every run gets, whatever its request.

    Its own session, stdin from /dev/null, stdout/stderr (and fd 3, the return value's pipe) on
    the agent's pipes, the done pipe on ``DONE_FD``, no other descriptor (bar ``control``, moved
    to ``CONTROL_FD``), the run's environment and streams. The agent creates the pipes in the
    order of ``fds`` then ``control``, so each source descriptor is above every target a ``dup2``
    before it overwrote.

    Exits with status 120 if the process cannot be set up.
    """
    out_w, err_w, val_w, done_w = fds
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        keep = {0, 1, 2, DONE_FD}
        if val_w is not None:
            os.dup2(val_w, 3)
            keep.add(3)
        # Close-on-exec: a program the code execs never holds it; a fork of the code does.
        os.dup2(done_w, DONE_FD, inheritable=False)
        if control is not None:
            os.dup2(control, CONTROL_FD)
            keep.add(CONTROL_FD)
        for fd in range(3, max(keep)):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.closerange(max(keep) + 1, 65536)
        done = os.fstat(DONE_FD)
        _DONE_ID[0] = (done.st_dev, done.st_ino)
        # The agent's own environment is already minimal (the backend sets it); no clear().
        os.environ.update({
            "HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        })
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
    except BaseException:
        os._exit(120)


def _standby(fds, workdir, control, nproc, compiled):
    """In a standby child: prepare, wait for the one request, then run it (``_Standby``); never return.

    It stays undumpable (out of reach of other processes of the uid) until it holds its request.
    At the end of the agent's stream (the agent is gone) it exits.
    """
    _prepare(fds, workdir, control)
    chunks = []
    try:
        while True:
            chunk = os.read(CONTROL_FD, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(CONTROL_FD)
        request = json.loads(b"".join(chunks))  # as the agent parsed the same bytes
        if isinstance(request, dict) and request.get("op") == "run_many":
            request = request["runs"][0]  # the agent hands a batch's raw line for its first run
        if not isinstance(request, dict):
            raise ValueError("not a request")
    except BaseException:
        os._exit(0)
    if request.get("call") is None:
        try:
            os.close(3)  # a script gets no fd 3, as under ``python3 main.py``
        except OSError:
            pass
    code = request.get("code", "")
    hit = compiled.get(code) if request.get("call") is not None else None
    _child(request, workdir, None, nproc, hit)


def _child(request, workdir, fds, nproc, compiled=None):
    """In the forked child: set up, set the run's limits, run the code, never return.

    The set-up is ``_prepare``'s, unless ``fds`` is None: a standby did it already.

    ``compiled`` is the agent's code object for a call's code, when it has one (``_Warm``): the
    same ``compile`` of the same text, done once, so the child skips it.
    """
    if fds is not None:
        _prepare(fds, workdir)
    try:
        _set_dumpable(True)
        timeout_s = float(request.get("timeout_s", 10.0))
        memory = int(request.get("memory_bytes", 512 * 1024 * 1024))
        _set_limit(resource.RLIMIT_AS, memory + _WARM_BYTES[0])
        _set_limit(resource.RLIMIT_CPU, int(timeout_s) + 2)
        _set_limit(resource.RLIMIT_CORE, 0)
        _set_limit(resource.RLIMIT_NOFILE, 256)
        _set_limit(resource.RLIMIT_FSIZE, 64 * 1024 * 1024)
        if nproc:
            wanted = request.get("max_processes")
            # RLIMIT_NPROC counts the agent too: one more, so the run's own tree gets exactly M.
            _set_limit(resource.RLIMIT_NPROC, min(nproc, int(wanted) + 1) if wanted else nproc)
        os.chdir(workdir)
        sys.argv = [MAIN_FILE] if request.get("call") is None else ["<code>"]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except BaseException:
        os._exit(120)
    code = request.get("code", "")
    call = request.get("call")
    status = 0
    if call is None:
        status = _run_main(code, workdir)
    else:
        result = {}
        try:
            namespace = {"__name__": "__toolgym_tool__", "__builtins__": builtins}
            exec(compiled if compiled is not None else compile(code, "<tool>", "exec"), namespace)
            name = call.get("function")
            func = namespace.get(name)
            if not callable(func):
                raise NameError("name %r is not defined" % (name,))
            value = func(**(call.get("arguments") or {}))
            # FTRL's rule (bytedance/FTRL Code/utils/utils.py): exact dict/list -> JSON.
            if type(value) == dict or type(value) == list:  # noqa: E721
                text = json.dumps(value, ensure_ascii=False)
            elif type(value) != str:  # noqa: E721
                text = str(value)
            else:
                text = value
            result = {"value": text}
        except BaseException as exc:
            try:
                result = {"error": str(exc), "error_type": type(exc).__name__}
            except BaseException:
                result = {"error": "unprintable error", "error_type": "Exception"}
        try:
            data = json.dumps(result, ensure_ascii=False).encode("utf-8", "backslashreplace")
            view = memoryview(data)
            while view:
                n = os.write(3, view)
                view = view[n:]
        except BaseException:
            status = 121
    _end(status)


def _end(status):
    """End a run's process with ``status``, after telling the agent so on the done pipe; never return.

    The byte on ``DONE_FD`` comes after stdout, stderr and the value pipe are flushed and closed,
    so the agent, once it has it and the pipes are at end of file, has the whole run and ends it
    there, without waiting for this process's exit (tearing down a forked interpreter's address
    space takes most of a millisecond). The code can write that descriptor itself: all it gains is
    to end its own run early, with a status of its choosing, as ``os._exit`` would. A run that
    never writes it (``os._exit``, a signal, a timeout) is ended by its exit as before.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    try:
        for fd in (1, 2, 3):
            try:
                os.close(fd)
            except OSError:
                pass
        done = os.fstat(DONE_FD)
        if (done.st_dev, done.st_ino) == _DONE_ID[0]:  # the code may have put another file there
            os.write(DONE_FD, bytes((status & 0xFF,)))
    except BaseException:
        pass
    os._exit(status)


def _run_main(code, workdir):
    """Run ``code`` as ``python3 main.py`` runs a script, in this (child) process; return the exit status.

    The source is written to ``main.py`` in the work dir (where SimpleTIR's sandbox writes it) so
    linecache finds it: a warning's last stderr line is its source line and traceback frames show
    theirs. ``__file__`` is absolute and ``sys.path[0]`` is the script's directory, as for
    ``python3 main.py`` since Python 3.9.
    """
    path = os.path.join(workdir, MAIN_FILE)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(code)
    except Exception:
        # No room to write it (or the text cannot be encoded): keep the lines in memory.
        try:
            import linecache

            lines = code.splitlines(True)
            linecache.cache[path] = (len(code), None, lines, path)
        except BaseException:
            pass
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__cached__ = None
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.path.insert(0, workdir)
    status = 0
    try:
        exec(compile(code, path, "exec"), module.__dict__)
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        try:
            # Drop the agent's own frame: the user sees the traceback of their code only (the
            # default hook prints the exception's own __traceback__, not the one passed).
            # sys.excepthook, as the interpreter uses it (the code may have replaced it).
            exc = exc.with_traceback(exc.__traceback__.tb_next)
            sys.excepthook(type(exc), exc, exc.__traceback__)
        except BaseException:
            pass
        status = 1
    # The interpreter's own exit: wait for non-daemon threads, then run atexit handlers.
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException:
        pass
    return status


def _exit_status(exc):
    """The exit status ``python3`` gives for an uncaught ``SystemExit``."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    try:
        print(exc.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _others_alive(me):
    """Pids of this uid other than the agent (and pid 1, which kill(-1) spares too)."""
    uid = os.getuid()
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in (me, 1):
            continue
        try:
            if os.stat("/proc/%d" % pid).st_uid != uid:
                continue
            with open("/proc/%d/stat" % pid, "rb") as fh:
                state = fh.read().rsplit(b")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != b"Z":
            alive.append(pid)
    return alive


def _reap():
    """Reap every dead child; whether the agent still has a child (alive, or not yet a zombie)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


_SUBREAPER = [False]
"""Whether the agent is its descendants' reaper (``PR_SET_CHILD_SUBREAPER`` took, or it is pid 1)."""


def _cleanup(kill_all, unreaped=()):
    """After a batch: with ``kill_all``, end every other process of the uid; reap what is dead.

    ``unreaped`` are the batch's run children that reported their end on the done pipe and were
    killed but not waited for (``_Run.finish``): they are reaped here, as a zombie or a process
    still exiting would count against the next run's process limits.
    """
    if not kill_all:
        for pid in unreaped:
            try:
                os.waitpid(pid, 0)  # killed already: it is exiting
            except ChildProcessError:
                pass
        _reap()
        return
    # Every process of the uid descends from the agent, and orphans come back to it (its
    # descendants' reaper): once it has no child left, nothing else of the uid is alive, which
    # spares the scan of /proc (a stat of every process on the host, for the process backend).
    me = os.getpid()
    pause = 0.0001
    for _ in range(250):
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        if not _reap() and (_SUBREAPER[0] or not _others_alive(me)):
            break
        time.sleep(pause)  # a killed process takes a while to exit: 0.1 ms, doubling to 5
        pause = min(pause * 2, 0.005)


class _Stream(object):
    """One stream's bytes within ``limit``: the first half, then a rolling last half.

    So a long output keeps its real end (SimpleTIR shows the first and last 256 characters of the
    whole output). ``total`` counts every byte read.
    """

    def __init__(self, limit, keep_tail=True):
        self.head_cap = limit - limit // 2 if keep_tail else limit
        self.tail_cap = limit // 2 if keep_tail else 0
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk):
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_cap:
            self.tail += chunk
            extra = len(self.tail) - self.tail_cap
            if extra > 0:
                del self.tail[:extra]  # O(1) amortized from the front of a bytearray

    @property
    def truncated(self):
        return self.total > len(self.head) + len(self.tail)

    def text(self):
        if not self.truncated:
            return bytes(self.head + self.tail).decode("utf-8", "replace")
        # Decoded apart: a character cut at either edge of the gap becomes U+FFFD.
        return bytes(self.head).decode("utf-8", "replace") + bytes(self.tail).decode("utf-8", "replace")


def _poll_children():
    """Reap every child that has exited, orphans the agent adopted included; ``{pid: wait status}``.

    Orphans are reaped too because a zombie still counts against the process limits.
    """
    found = {}
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if got == 0:
            return found
        found[got] = status


def _pidfd(pid):
    """A descriptor that turns readable when ``pid`` exits (Linux 5.3+, Python 3.9+), else None.

    With it the exit wakes the same ``select`` as the pipes do, instead of a sleep-and-poll loop.
    """
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


class _Run(object):
    """One run of a batch: its forked child, its pipes, its own deadline and caps."""

    def __init__(self, request, workdir, nproc, compiled, standby=None, raw=None):
        self.request = request
        self.limit = max(0, int(request.get("max_output_bytes", 1024 * 1024)))
        self.value_limit = max(0, int(request.get("max_value_bytes", 16 * 1024 * 1024)))
        self.timeout_s = max(0.001, float(request.get("timeout_s", 10.0)))
        self.is_call = request.get("call") is not None
        self.started = time.monotonic()
        if standby is not None and standby.hand(request, raw):
            pid = standby.pid
            out_r, err_r, val_r, done_r = standby.pipes
            if not self.is_call:
                os.close(val_r)
                val_r = None
        else:
            if standby is not None:
                standby.discard()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            val_r, val_w = os.pipe() if self.is_call else (None, None)
            done_r, done_w = os.pipe()
            self.started = time.monotonic()
            gc.freeze()  # the agent's objects stay out of the child's collections: fewer copied pages
            pid = os.fork()
            if pid == 0:
                for fd in (out_r, err_r, val_r, done_r):
                    if fd is not None:
                        os.close(fd)
                _child(request, workdir, (out_w, err_w, val_w, done_w), nproc, compiled)
            for fd in (out_w, err_w, val_w, done_w):
                if fd is not None:
                    os.close(fd)
        self.pid = pid
        self.done_fd = done_r
        self.reported = False
        self.names = {out_r: "stdout", err_r: "stderr"}
        self.streams = {"stdout": _Stream(self.limit), "stderr": _Stream(self.limit)}
        if val_r is not None:
            self.names[val_r] = "value"
            self.streams["value"] = _Stream(self.value_limit, keep_tail=False)
        self.open_fds = set(self.names)
        self.pidfd = _pidfd(pid)
        self.deadline = self.started + self.timeout_s
        self.exit_status = None
        self.exited_at = None
        self.timed_out = False
        self.done = False
        self.duration = 0.0

    def watched(self):
        """The descriptors to wait on: open pipes, and the done pipe and pidfd until the run's end is known."""
        fds = list(self.open_fds)
        if self.exit_status is None:
            if self.pidfd is not None:
                fds.append(self.pidfd)
            if self.done_fd is not None:
                fds.append(self.done_fd)
        return fds

    def read_done(self):
        """Take the status byte the child wrote as its last act (``_end``): the run has ended.

        At end of file without a byte (the child exited some other way) nothing is known: its
        exit, seen by the pidfd or the batch's poll, ends the run as before.
        """
        chunk = os.read(self.done_fd, 64)
        os.close(self.done_fd)
        self.done_fd = None
        if chunk and self.exit_status is None:
            self.exited(chunk[0] << 8)  # the wait status of an exit with that code
            self.reported = True

    def read(self, fd):
        """Take what is ready on one of this run's pipes."""
        chunk = os.read(fd, 65536)
        if not chunk:
            self.open_fds.discard(fd)
        else:
            self.streams[self.names[fd]].add(chunk)

    def exited(self, status, reaped=False):
        """Record the child's wait status: from its done byte, or ``reaped`` by the batch's poll."""
        if reaped:
            self.reported = False  # nothing left to reap, whatever ended the run
        if self.exit_status is None:
            self.exit_status = status
            self.exited_at = time.monotonic()

    def tick(self, now):
        """End the run when it is over: deadline, exit with pipes drained, or exit grace spent.

        Returns how long the batch may wait before looking at this run again.
        """
        if now >= self.deadline:
            self.timed_out = self.exit_status is None
            self.finish()
            return 0.0
        if self.exit_status is not None and (not self.open_fds or now - self.exited_at > EXIT_GRACE_S):
            self.finish()
            return 0.0
        wait = min(self.deadline - now, 0.05)
        if self.exit_status is not None:
            wait = min(wait, self.exited_at + EXIT_GRACE_S - now)
        elif not self.open_fds and self.pidfd is None:
            wait = min(wait, 0.0005)  # pipes closed, the child is exiting: poll for it
        return max(wait, 0.0)

    def finish(self):
        """Kill the run's process group and close the pipes, without waiting for the child.

        A child that reported its end on the done pipe, or was killed at its deadline, is still to
        be reaped (``run_batch`` hands its pid to ``_cleanup``, which may run after the reply).
        """
        self.done = True
        self.duration = time.monotonic() - self.started
        for kill in (os.killpg, os.kill):  # the group; the child itself, should it have left it
            try:
                kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        for fd in self.names:
            os.close(fd)
        for fd in (self.pidfd, self.done_fd):
            if fd is not None:
                os.close(fd)
        self.pidfd = self.done_fd = None

    def reply(self):
        """The run's reply (without its id)."""
        streams = self.streams
        exit_status = self.exit_status
        value = None
        error = None
        error_type = None
        if self.timed_out:
            status = "timeout"
            error = "timed out after %g s" % self.timeout_s
        elif os.WIFSIGNALED(exit_status):
            status = "killed"
            sig = os.WTERMSIG(exit_status)
            try:
                signame = signal.Signals(sig).name
            except ValueError:
                signame = str(sig)
            hint = " (CPU time limit)" if sig == signal.SIGXCPU else " (memory limit?)" if sig == signal.SIGKILL else ""
            error = "killed by %s%s" % (signame, hint)
        else:
            code = os.WEXITSTATUS(exit_status)
            status = "ok" if code == 0 else "error"
            if code == 120:
                error = "sandbox could not set up the process"
            elif code != 0 and not self.is_call:
                error = "exit status %d" % code
        value_truncated = False
        if self.is_call and not self.timed_out and status != "killed":
            raw = streams["value"]
            if raw.truncated:
                # Never a cut value: the verifier would judge what the tool did not return.
                value_truncated = True
                parsed = {"error": "the tool returned more than %d bytes (max_value_bytes=%d)"
                          % (self.value_limit, self.value_limit), "error_type": "OutputTooLarge"}
            else:
                try:
                    parsed = json.loads(raw.text()) if raw.total else {}
                except ValueError:
                    parsed = None
                if not isinstance(parsed, dict):  # the code may write its own record into the pipe
                    parsed = {"error": "the tool's result could not be read", "error_type": "ProtocolError"}
            if "value" in parsed:
                value = parsed["value"]
                status = "ok"
            else:
                status = "error"
                # An exception without a message (MemoryError(), KeyError()) is named by its class.
                error = (parsed.get("error") or parsed.get("error_type") or error
                         or "the tool exited without a result")
                error_type = parsed.get("error_type")
        return {
            "status": status,
            "stdout": streams["stdout"].text(),
            "stderr": streams["stderr"].text(),
            "stdout_truncated": streams["stdout"].truncated,
            "stderr_truncated": streams["stderr"].truncated,
            "value": value,
            "value_truncated": value_truncated,
            "error": error,
            "error_type": error_type,
            "duration_s": round(self.duration, 6),
        }


class _Standby(object):
    """A child forked ahead of the next run, already prepared (``_prepare``), waiting for its request.

    The agent is the zygote: it imported what tool code commonly needs (``WARM_MODULES``) and
    holds the code objects of tool code it has seen (``_Warm``), and the standby is a plain fork
    of it, made after the previous batch ended and was cleaned up. So the fork, the copy-on-write
    faults of a fresh child and the per-process set-up happen while the policy thinks, not on
    the call's clock. A standby serves one run, then is gone like any run's process: runs never
    share a process. Its request goes over a pipe of its own (``CONTROL_FD``), closed before the
    code runs. Should it be dead or the request not fit the pipe at once, the run forks afresh.
    """

    def __init__(self, workdir, nproc, compiled):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        val_r, val_w = os.pipe()
        done_r, done_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        gc.freeze()  # the agent's objects stay out of the child's collections: fewer copied pages
        pid = os.fork()
        if pid == 0:
            for fd in (out_r, err_r, val_r, done_r, ctl_w):
                os.close(fd)
            _standby((out_w, err_w, val_w, done_w), workdir, ctl_r, nproc, compiled)
        for fd in (out_w, err_w, val_w, done_w, ctl_r):
            os.close(fd)
        os.set_blocking(ctl_w, False)
        self.pid = pid
        self.pipes = (out_r, err_r, val_r, done_r)
        self.control = ctl_w

    def hand(self, request, raw=None):
        """Give the standby its request; False (nothing sent) if it cannot take all of it at once.

        ``raw`` is the request line as the agent read it (a ``run``, or a ``run_many`` whose first
        run this is): the child parses it as the agent did, so it is passed on as it came, not
        encoded again.
        """
        if raw is not None:
            data = raw
        else:
            try:
                data = json.dumps(request, ensure_ascii=False).encode("utf-8", "backslashreplace")
            except (TypeError, ValueError):
                return False
        old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a dead standby must not end the agent
        try:
            sent = os.write(self.control, data)
        except OSError:
            sent = -1
        finally:
            signal.signal(signal.SIGPIPE, old)
        if sent != len(data):
            return False
        os.close(self.control)
        self.control = None
        return True

    def discard(self):
        """End an unused standby and reap it."""
        for fd in self.pipes + ((self.control,) if self.control is not None else ()):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass


def run_batch(requests, workdir, kill_all, nproc, compiled=None, standby=None, raw=None, unreaped=None):
    """Serve ``run`` requests at once, each in its own forked child; return their replies in order.

    The first run goes to ``standby`` when one is given (it is used up either way), with ``raw``,
    the request line it came in, when given (``_Standby.hand``).

    Each run keeps its own deadline, caps and rlimits, and its process group is killed as soon as
    it ends. ``--kill-all``'s sweep of the whole uid (``_cleanup``) waits for the last run of the
    batch (it would end the others too). With ``unreaped`` (a list) the sweep is the caller's,
    done after it sent the replies: the pids still to reap are appended to it. Without it the sweep
    is done here, before the replies are built.
    Never raises for anything the code does: a timeout, a signal, a non-zero exit or a missing or
    oversized return value is a ``status`` and an ``error`` in the reply.
    """
    compiled = compiled or {}
    runs = []
    pending = [] if unreaped is None else unreaped
    try:
        for request in requests:
            code = request.get("code", "")
            hit = compiled.get(code) if request.get("call") is not None else None
            runs.append(_Run(request, workdir, nproc, hit, standby, raw))
            standby = None
        by_pid = dict((r.pid, r) for r in runs)
        while True:
            now = time.monotonic()
            wait = 0.05
            owners = {}
            for r in runs:
                if r.done:
                    continue
                wait = min(wait, r.tick(now))
                if not r.done:
                    for fd in r.watched():
                        owners[fd] = r
            if not owners and all(r.done for r in runs):
                break
            try:
                ready, _, _ = select.select(list(owners), [], [], wait)
            except InterruptedError:
                continue
            for fd in ready:
                r = owners[fd]
                if fd in r.open_fds:
                    r.read(fd)
                elif fd == r.done_fd:
                    r.read_done()
            for pid, status in _poll_children().items():
                if pid in by_pid:
                    by_pid[pid].exited(status, reaped=True)
    finally:
        if standby is not None:
            standby.discard()
        for r in runs:
            if not r.done:
                r.finish()
        pending.extend(r.pid for r in runs if r.exit_status is None or r.reported)
        if unreaped is None:
            _cleanup(kill_all, pending)
    return [r.reply() for r in runs]


def run(request, workdir, kill_all, nproc, compiled=None):
    """Serve one ``run`` request in a forked child; return the reply (without its id)."""
    return run_batch([request], workdir, kill_all, nproc, compiled)[0]


WARM_MODULES = (
    "re", "math", "cmath", "collections", "datetime", "itertools", "functools", "operator",
    "string", "typing", "random", "decimal", "fractions", "statistics", "hashlib", "base64",
    "copy", "textwrap", "urllib.parse", "dataclasses", "enum", "bisect", "heapq", "uuid",
)
"""Standard modules FTRL-style tool code commonly imports, loaded once in the agent so every
forked run finds them in ``sys.modules``. Only modules whose import has no per-process state a
child could see twice: ``random`` reseeds itself in every forked child (``os.register_at_fork``),
and nothing here starts a thread."""

MAX_WARM_SOURCE = 256 * 1024
MAX_WARM_ENTRIES = 128


class _Warm(object):
    """Code objects of tool code the agent has seen run, so a call's child skips ``compile``.

    The agent compiles a call's code only after a child of it compiled and ran that same text
    to an ``ok`` (same interpreter, same input): untrusted text that could hurt the compiler never
    reaches the agent first. Bounded in entries and in source size.
    """

    def __init__(self):
        self.codes = {}

    def learn(self, requests, replies):
        """Compile, in the agent, the call code of runs that ended ``ok``; never raises."""
        for i, request in enumerate(requests):
            reply = replies[i]
            code = request.get("code")
            if (request.get("call") is None or reply.get("status") != "ok" or not isinstance(code, str)
                    or code in self.codes or len(code) > MAX_WARM_SOURCE):
                continue
            if len(self.codes) >= MAX_WARM_ENTRIES:
                self.codes.clear()
            try:
                self.codes[code] = compile(code, "<tool>", "exec")
            except BaseException:
                pass


_WARM_BYTES = [0]
"""Address space the warm imports added to the agent, so to every run forked from it."""
_WARMED = [False]
"""Whether ``_warm_imports`` ran in this process image already."""


def _address_space():
    """This process's address space in bytes (``VmSize``), 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _warm_imports():
    """Import ``WARM_MODULES`` into the agent (best effort: a missing one is skipped).

    What they add to the address space (some 10 MB) is added to every run's ``RLIMIT_AS`` too,
    so the code has the same room for its own allocations as in a child of a cold agent. Done
    once per process image: the namespace tier's supervisor warms the agent before forking it
    (``nsd.py``), and a second call would measure nothing and zero the figure.
    """
    if _WARMED[0]:
        return
    _WARMED[0] = True
    before = _address_space()
    for name in WARM_MODULES:
        try:
            __import__(name)
        except BaseException:
            pass
    if before:
        _WARM_BYTES[0] = max(0, _address_space() - before)


WRITE_CHUNK_CHARS = 1 << 20
"""Strings longer than this are escaped and written a slice at a time (see ``_write_line``)."""


def _has_long_string(obj):
    """Whether a reply holds a string long enough to be written in slices."""
    if isinstance(obj, str):
        return len(obj) > WRITE_CHUNK_CHARS
    if isinstance(obj, dict):
        return any(_has_long_string(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_long_string(v) for v in obj)
    return False


def _write_json(out, obj):
    """Write ``obj`` as ASCII JSON, long strings escaped a slice at a time."""
    if isinstance(obj, str) and len(obj) > WRITE_CHUNK_CHARS:
        out.write(b'"')
        for i in range(0, len(obj), WRITE_CHUNK_CHARS):
            out.write(json.encoder.encode_basestring_ascii(obj[i:i + WRITE_CHUNK_CHARS])[1:-1].encode("ascii"))
        out.write(b'"')
    elif isinstance(obj, dict):
        out.write(b"{")
        for i, (key, value) in enumerate(obj.items()):
            out.write((", " if i else "").encode("ascii") + json.dumps(str(key)).encode("ascii") + b": ")
            _write_json(out, value)
        out.write(b"}")
    elif isinstance(obj, list):
        out.write(b"[")
        for i, value in enumerate(obj):
            if i:
                out.write(b", ")
            _write_json(out, value)
        out.write(b"]")
    else:
        out.write(json.dumps(obj, ensure_ascii=True).encode("ascii"))


def _write_line(out, obj):
    """Write ``obj`` as one line of ASCII JSON, never whole in memory when it holds a long string.

    The same JSON as ``json.dumps(obj, ensure_ascii=True)``. Escaping can make a value six times
    longer (U+FFFD takes six ASCII characters), and the agent lives inside the sandbox's memory
    limit, where whole copies of the reply to a 64 MiB value (or to a ``run_many`` of several) got
    it OOM-killed: a dead sandbox, an infrastructure error that the sandboxed code chose.
    """
    if not _has_long_string(obj):
        out.write(json.dumps(obj, ensure_ascii=True).encode("ascii") + b"\n")
        return
    _write_json(out, obj)
    out.write(b"\n")


STANDBY_IDLE_S = 0.0
"""After a reply and its sweep, how long the agent waits for the next request before it forks a standby.

A fork right after the reply competes for the CPU with whoever reads that reply (the server's
thread, which then answers the step); the sweep that now follows the reply (the last run's exit,
most of a millisecond) already keeps the fork off that reader's clock, and a request that is
already waiting then gets a fresh fork (``_Run``). Measured with ``bench/zygote_call.py``, longer
waits (0.5, 1, 2, 5 ms) were no better at 0 and 5 ms between calls and worse at 1.5 ms (the fork
then lands as the next request comes), so 0: only a request already there skips the standby.
"""


class _Lines(object):
    """Request lines read straight from a descriptor, so the agent can ``select`` on it.

    (A buffered reader's readiness is not the descriptor's: a line may sit in its buffer.)
    """

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()
        self.scanned = 0
        self.eof = False

    def ready(self, timeout):
        """Whether a line (or the end of input) comes within ``timeout`` seconds."""
        if self.eof or self.buf.find(b"\n", self.scanned) >= 0:
            return True
        readable, _, _ = select.select([self.fd], [], [], timeout)
        return bool(readable)

    def readline(self, limit):
        """The next line with its newline (b"" at end of input), or None for a line over ``limit`` bytes.

        An oversized line is read to its end and dropped, never held whole.
        """
        skipping = False
        while True:
            end = self.buf.find(b"\n", self.scanned)
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                self.scanned = 0
                if skipping or len(line) > limit:
                    return None
                return line
            if len(self.buf) > limit:
                skipping = True
                del self.buf[:]
            self.scanned = len(self.buf)
            if self.eof:
                line = bytes(self.buf)
                del self.buf[:]
                self.scanned = 0
                return None if skipping else line
            chunk = os.read(self.fd, 1 << 20)
            if chunk:
                self.buf += chunk
            else:
                self.eof = True


def main(argv):
    """Parse the options (``--workdir``, ``--kill-all``, ``--nproc``, ``--connect``), say hello, then serve requests.

    With ``--connect PATH`` the protocol stream is that unix socket (the server's, mounted into the
    container) instead of stdin/stdout: it is put on fds 0 and 1, so all else is as without it.
    Returns the exit status (0 at end of input).
    """
    workdir = "/work"
    kill_all = False
    nproc = 0
    connect = None
    i = 0
    while i < len(argv):
        if argv[i] == "--workdir":
            workdir = argv[i + 1]
            i += 2
        elif argv[i] == "--kill-all":
            kill_all = True
            i += 1
        elif argv[i] == "--nproc":
            nproc = int(argv[i + 1])
            i += 2
        elif argv[i] == "--connect":
            connect = argv[i + 1]
            i += 2
        else:
            i += 1
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # Code in the sandbox may signal the agent (same uid): as a container's pid 1 it then
    # gets only the signals it handles, so it handles none (Python's SIGINT handler would
    # end it). Each child restores SIGINT for its own code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_dumpable(False)
    # Orphans of a run come to the agent (as to a container's pid 1), which reaps them.
    _SUBREAPER[0] = _prctl(PR_SET_CHILD_SUBREAPER, 1) or os.getpid() == 1
    if connect:
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(connect)
        os.dup2(sock.fileno(), 0)
        os.dup2(sock.fileno(), 1)
        sock.close()
    inp = _Lines(sys.stdin.fileno())
    out = sys.stdout.buffer

    def send(obj):
        _write_line(out, obj)
        out.flush()

    send({"hello": "toolgym-agent", "protocol": PROTOCOL, "pid": os.getpid(),
          "python": sys.version.split()[0], "uid": os.getuid()})
    # After the hello: the server's wait for a new sandbox does not include the warming.
    _warm_imports()
    gc.freeze()  # what the agent holds now stays out of every child's collections
    warm = _Warm()
    # The first standby before any answer: a ping (the warm pool's) then says the agent is ready.
    standby = _Standby(workdir, nproc, warm.codes)
    while True:
        if standby is None and not inp.ready(STANDBY_IDLE_S):
            standby = _Standby(workdir, nproc, warm.codes)
        line = inp.readline(MAX_REQUEST_BYTES)
        if line is None:
            send({"id": None, "status": "protocol_error", "error": "request too large"})
            continue
        if not line:
            if standby is not None:
                standby.discard()
            return 0
        try:
            request = json.loads(line)
            rid = request.get("id")
            op = request.get("op")
        except (ValueError, AttributeError):
            send({"id": None, "status": "protocol_error", "error": "request is not a JSON object"})
            continue
        if op == "ping":
            send({"id": rid, "status": "ok", "pong": True})
        elif op in ("run", "run_many"):
            batch = [request] if op == "run" else request.get("runs")
            if (not isinstance(batch, list) or not 0 < len(batch) <= MAX_BATCH
                    or not all(isinstance(r, dict) for r in batch)):
                send({"id": rid, "status": "protocol_error",
                      "error": "run_many needs 'runs': 1 to %d run requests" % MAX_BATCH})
                continue
            unreaped = []
            try:
                replies = run_batch(batch, workdir, kill_all, nproc, warm.codes, standby, line, unreaped)
            except Exception as exc:  # the agent must outlive any request
                reply = {"status": "protocol_error", "error": "%s: %s" % (type(exc).__name__, exc)}
            else:
                reply = replies[0] if op == "run" else {"status": "ok", "results": replies}
            standby = None  # used up either way
            reply["id"] = rid
            send(reply)
            # Reply first, clean up after: the sweep still ends before the next request is read.
            _cleanup(kill_all, unreaped)
            if reply.get("status") != "protocol_error":
                warm.learn(batch, replies)
        else:
            send({"id": rid, "status": "protocol_error", "error": "unknown op %r" % (op,)})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
