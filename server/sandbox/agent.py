"""ToolGym's sandbox agent: a small, stdlib-only program that runs inside every sandbox.

The server starts it once per sandbox (``python3 -u -c <this source> --workdir DIR``) and
talks to it over its stdin/stdout, one JSON object per line, for the sandbox's whole life.
That single persistent stream is why a tool call costs about a millisecond instead of a
``docker exec``.

Requests::

    {"id": 7, "op": "run", "code": "...", "call": {"function": "f", "arguments": {...}} | null,
     "timeout_s": 10.0, "memory_bytes": 536870912, "max_output_bytes": 1048576,
     "max_value_bytes": 16777216, "max_processes": 50 | null}
    {"id": 8, "op": "ping"}

Every ``run`` forks a fresh child: it starts its own session, gets the limits (address space,
CPU, open files, file size, processes), a clean stdin, its stdout/stderr on pipes and its work
dir as cwd. Plain code runs as ``python3 main.py`` would run it (SimpleTIR's sandbox runs model
code that way): it is written to ``main.py`` in the work dir and executed from that file as
``__main__``, so warnings and tracebacks show its source lines. A ``call`` defines the code and
calls ``function(**arguments)``.

The agent reads the pipes (and drains them, so a flood never blocks the child), keeping of each
stream the first and the last half of ``max_output_bytes``, so the real end of a long output
survives; a return value is kept whole up to ``max_value_bytes`` and is an error beyond it,
never a cut value. It stops the run at ``timeout_s``, and then kills whatever the run left
behind: the child's process group, and with ``--kill-all`` every process of the agent's user
(``kill(-1)``), which also ends a fork bomb that escaped the group. ``--kill-all`` is only
safe where the agent's uid belongs to this sandbox alone (a container, or a per-sandbox uid).

``--nproc N`` (given only where the uid is the sandbox's alone) sets ``RLIMIT_NPROC``, which
counts every process and thread of the uid, the agent included: a run's ``max_processes`` M
becomes ``min(N, M + 1)``, so the run's own tree holds exactly M, SimpleTIR's
``rlimit nproc 50`` for a user with nothing else running. The agent is a child subreaper and
reaps as it goes, so dead orphans of earlier runs never count against the next. (In Docker the
uid is shared by every container on the host, so there the backend sets the container's pids
limit instead; see ``AgentSandbox``.)

The agent never trusts the code: nothing the child prints reaches the protocol stream.
Python 3.8+; no imports beyond the standard library.
"""

import builtins
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
EXIT_GRACE_S = 0.2
"""After the child exits, how long to wait for descendants still holding its pipes."""


PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
MAIN_FILE = "main.py"
_libc = None


def _prctl(option, value):
    """Best effort: without ctypes, nothing changes."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(option, value, 0, 0, 0)
    except Exception:
        pass


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


def _child(request, workdir, fds, nproc):
    """In the forked child: set up the process, run the code, never return."""
    out_w, err_w, val_w = fds
    try:
        _set_dumpable(True)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        keep = {0, 1, 2}
        if val_w is not None:
            os.dup2(val_w, 3)
            keep.add(3)
        os.closerange(max(keep) + 1, 65536)
        timeout_s = float(request.get("timeout_s", 10.0))
        memory = int(request.get("memory_bytes", 512 * 1024 * 1024))
        _set_limit(resource.RLIMIT_AS, memory)
        _set_limit(resource.RLIMIT_CPU, int(timeout_s) + 2)
        _set_limit(resource.RLIMIT_CORE, 0)
        _set_limit(resource.RLIMIT_NOFILE, 256)
        _set_limit(resource.RLIMIT_FSIZE, 64 * 1024 * 1024)
        if nproc:
            wanted = request.get("max_processes")
            # RLIMIT_NPROC counts the agent too: one more, so the run's own tree gets exactly M.
            _set_limit(resource.RLIMIT_NPROC, min(nproc, int(wanted) + 1) if wanted else nproc)
        os.chdir(workdir)
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
            exec(compile(code, "<tool>", "exec"), namespace)
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
    try:
        sys.stdout.flush()
        sys.stderr.flush()
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
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _cleanup(child_pid, kill_all):
    try:
        os.killpg(child_pid, signal.SIGKILL)
    except OSError:
        pass
    if kill_all:
        me = os.getpid()
        for _ in range(200):
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            _reap()
            if not _others_alive(me):
                break
            time.sleep(0.005)
    _reap()


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


def _poll_children(pid):
    """Reap every child that has exited, orphans the agent adopted included; the run's wait status if among them.

    Orphans are reaped too because a zombie still counts against the process limits.
    """
    found = None
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if got == 0:
            return found
        if got == pid:
            found = status


def run(request, workdir, kill_all, nproc):
    """Serve one ``run`` request in a forked child; return the reply (without its id).

    Never raises for anything the code does: a timeout, a signal, a non-zero exit or a missing
    or oversized return value is a ``status`` and an ``error`` in the reply. Whatever the run left
    behind is killed before the reply is built.
    """
    limit = max(0, int(request.get("max_output_bytes", 1024 * 1024)))
    value_limit = max(0, int(request.get("max_value_bytes", 16 * 1024 * 1024)))
    timeout_s = max(0.001, float(request.get("timeout_s", 10.0)))
    is_call = request.get("call") is not None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    val_r, val_w = os.pipe() if is_call else (None, None)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r, val_r):
            if fd is not None:
                os.close(fd)
        _child(request, workdir, (out_w, err_w, val_w), nproc)
    for fd in (out_w, err_w, val_w):
        if fd is not None:
            os.close(fd)
    names = {out_r: "stdout", err_r: "stderr"}
    streams = {"stdout": _Stream(limit), "stderr": _Stream(limit)}
    if val_r is not None:
        names[val_r] = "value"
        streams["value"] = _Stream(value_limit, keep_tail=False)
    open_fds = set(names)
    deadline = started + timeout_s
    exit_status = None
    exited_at = None
    timed_out = False
    while open_fds:
        now = time.monotonic()
        if now >= deadline:
            timed_out = exit_status is None
            break
        if exited_at is not None and now - exited_at > EXIT_GRACE_S:
            break
        wait = min(deadline - now, 0.05)
        try:
            ready, _, _ = select.select(list(open_fds), [], [], wait)
        except InterruptedError:
            continue
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            streams[names[fd]].add(chunk)
        status = _poll_children(pid)
        if status is not None and exit_status is None:
            exit_status = status
            exited_at = time.monotonic()
    if exit_status is None and not timed_out:
        # Pipes closed; the child is exiting. Wait for it, but never past the deadline.
        while exit_status is None and time.monotonic() < deadline:
            exit_status = _poll_children(pid)
            if exit_status is None:
                time.sleep(0.001)
        timed_out = exit_status is None
    _cleanup(pid, kill_all)
    if exit_status is None:
        try:
            _, exit_status = os.waitpid(pid, 0)
        except ChildProcessError:
            exit_status = 0
    for fd in names:
        os.close(fd)
    duration = time.monotonic() - started

    value = None
    error = None
    error_type = None
    if timed_out:
        status = "timeout"
        error = "timed out after %g s" % timeout_s
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
        elif code != 0 and not is_call:
            error = "exit status %d" % code
    value_truncated = False
    if is_call and not timed_out and status != "killed":
        raw = streams["value"]
        if raw.truncated:
            # Never a cut value: the verifier would judge what the tool did not return.
            value_truncated = True
            parsed = {"error": "the tool returned more than %d bytes (max_value_bytes=%d)" % (value_limit, value_limit),
                      "error_type": "OutputTooLarge"}
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
    reply = {
        "status": status,
        "stdout": streams["stdout"].text(),
        "stderr": streams["stderr"].text(),
        "stdout_truncated": streams["stdout"].truncated,
        "stderr_truncated": streams["stderr"].truncated,
        "value": value,
        "value_truncated": value_truncated,
        "error": error,
        "error_type": error_type,
        "duration_s": round(duration, 6),
    }
    return reply


WRITE_CHUNK_CHARS = 1 << 20


def _write_line(out, obj):
    """Write ``obj`` as one line of ASCII JSON, its ``value`` escaped a slice at a time.

    The same JSON as ``json.dumps(obj, ensure_ascii=True)`` (keys in another order), but never
    whole in memory: escaping can make a value six times longer (U+FFFD takes six ASCII
    characters), and the agent lives inside the sandbox's memory limit, where whole copies of the
    reply to a 64 MiB value got it OOM-killed (a dead sandbox: an infrastructure error that the
    sandboxed code chose).
    """
    value = obj.get("value")
    if not isinstance(value, str) or len(value) <= WRITE_CHUNK_CHARS:
        out.write(json.dumps(obj, ensure_ascii=True).encode("ascii") + b"\n")
        return
    rest = json.dumps(dict((k, v) for k, v in obj.items() if k != "value"), ensure_ascii=True)
    out.write((rest[:-1] + ', "value": "' if len(rest) > 2 else '{"value": "').encode("ascii"))
    for i in range(0, len(value), WRITE_CHUNK_CHARS):
        out.write(json.encoder.encode_basestring_ascii(value[i : i + WRITE_CHUNK_CHARS])[1:-1].encode("ascii"))
    out.write(b'"}\n')


def main(argv):
    """Parse ``--workdir``, ``--kill-all`` and ``--nproc``, say hello, then serve requests until stdin closes.

    Returns the exit status (0 at end of input).
    """
    workdir = "/work"
    kill_all = False
    nproc = 0
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
        else:
            i += 1
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # Code in the sandbox may signal the agent (same uid): as a container's pid 1 it then
    # gets only the signals it handles, so it handles none (Python's SIGINT handler would
    # end it). Each child restores SIGINT for its own code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_dumpable(False)
    # Orphans of a run come to the agent (as to a container's pid 1), which reaps them.
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    inp = sys.stdin.buffer
    out = sys.stdout.buffer

    def send(obj):
        _write_line(out, obj)
        out.flush()

    send({"hello": "toolgym-agent", "protocol": PROTOCOL, "pid": os.getpid(),
          "python": sys.version.split()[0], "uid": os.getuid()})
    while True:
        line = inp.readline(MAX_REQUEST_BYTES + 1)
        if not line:
            return 0
        if len(line) > MAX_REQUEST_BYTES:
            # Skip the rest of an oversized line, then refuse it.
            while line and not line.endswith(b"\n"):
                line = inp.readline(MAX_REQUEST_BYTES)
            send({"id": None, "status": "protocol_error", "error": "request too large"})
            continue
        try:
            request = json.loads(line)
            rid = request.get("id")
            op = request.get("op")
        except (ValueError, AttributeError):
            send({"id": None, "status": "protocol_error", "error": "request is not a JSON object"})
            continue
        if op == "ping":
            send({"id": rid, "status": "ok", "pong": True})
        elif op == "run":
            try:
                reply = run(request, workdir, kill_all, nproc)
            except Exception as exc:  # the agent must outlive any request
                reply = {"status": "protocol_error", "error": "%s: %s" % (type(exc).__name__, exc)}
            reply["id"] = rid
            send(reply)
        else:
            send({"id": rid, "status": "protocol_error", "error": "unknown op %r" % (op,)})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
