"""The namespace tier's supervisor: pid 1 of a long-lived host container, making one namespace set per episode.

Stdlib only, Python 3.8+, run as ``python3 -u -I -c <this source> <agent source> <json options>``
(nothing is mounted in: both sources travel on the command line, as the container tier's agent
does). It speaks a framed protocol over its stdin/stdout (Docker's attach stream), so one stream
carries every episode of the host container. A frame is a header line ``<kind> <episode> <size>``
and ``size`` bytes of payload:

- server to supervisor: ``O`` open an episode (payload: JSON limits), ``D`` bytes for the
  episode's agent stdin, ``C`` close it;
- supervisor to server: ``H`` hello (once), ``D`` bytes from the episode's agent stdout, ``X``
  the episode is gone (payload: JSON ``{"status", "anomaly"}``).

An episode is a fork of this process (the zygote: the agent's source is compiled and its warm
imports done once here, so an episode costs a fork, not an interpreter start, and shares its
memory copy-on-write) that unshares user, mount, pid, ipc, uts and network namespaces, maps
one uid of its own onto the host container's user, and forks the episode's pid 1. That process
mounts a fresh ``/proc``, tmpfs ``/work``, ``/tmp`` and ``/dev/shm`` and the ipc namespace's own
``/dev/mqueue`` (so no file the episode writes is visible to another), masks ``/proc`` paths
again as Docker does, caps its address space, installs a second seccomp filter that refuses
``unshare``/``mount``/``setns``/``umount2``/``pivot_root``/``sethostname`` (so the code cannot
nest namespaces of its own), drops every capability it holds inside its user namespace, and
runs the agent's ``main`` with the pipes as its stdin/stdout. The agent is pid 1 of the pid
namespace: killing it (``C``) makes the kernel kill everything else in it and frees its mounts.

After each close it checks for anomalies: a process left in the episode's pid namespace, or a
file in the host container's own writable places (no episode should reach them). The server
recycles a host container that reports one.
"""

import ctypes
import gc
import json
import os
import signal
import struct
import sys
import types

NEW_NS = 0x00020000
NEW_UTS = 0x04000000
NEW_IPC = 0x08000000
NEW_USER = 0x10000000
NEW_PID = 0x20000000
NEW_NET = 0x40000000
FLAGS = NEW_USER | NEW_NS | NEW_PID | NEW_IPC | NEW_UTS | NEW_NET
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY = 2, 4, 8, 1
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MASKED = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap")
"""Docker's masked paths, masked again over the episode's fresh ``/proc`` (those that exist)."""
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
"""Docker's read-only ``/proc`` paths, made read-only again in the episode."""
HOST_WRITABLE = ("/tmp", "/dev/shm", "/dev/mqueue")
"""The host container's own writable places: an episode covers each with its own mount, so a
file here means an episode reached the host container's (an anomaly)."""
DENIED_X86_64 = (272, 165, 166, 308, 155, 170, 171, 435)
"""unshare, mount, umount2, setns, pivot_root, sethostname, setdomainname, clone3 (x86_64)."""
AUDIT_ARCH_X86_64 = 0xC000003E

libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def _mount(source, target, fstype, flags, data=None):
    _check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None), "mount %s" % target)


def _deny_namespace_syscalls():
    """A seccomp filter (stacked on the host container's) refusing the namespace syscalls with EPERM.

    The host profile must allow them for this supervisor; the episode's code never needs them.
    x86_64 only: elsewhere the filter is skipped (the host profile and no capabilities remain).
    """
    if os.uname().machine != "x86_64":
        return
    ins = []

    def op(code, jt, jf, k):
        ins.append(struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF))

    eperm, allow = 0x00050000 | 1, 0x7FFF0000
    op(0x20, 0, 0, 4)                       # ld arch
    op(0x15, 1, 0, AUDIT_ARCH_X86_64)       # jeq x86_64 -> skip the deny
    op(0x06, 0, 0, eperm)
    op(0x20, 0, 0, 0)                       # ld nr
    op(0x35, 0, 1, 0x40000000)              # jge x32 syscall space -> deny
    op(0x06, 0, 0, eperm)
    for i, nr in enumerate(DENIED_X86_64):
        op(0x15, len(DENIED_X86_64) - i, 0, nr)  # jeq nr -> the deny at the end
    op(0x06, 0, 0, allow)
    op(0x06, 0, 0, eperm)
    prog = b"".join(ins)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HxxxxxxQ", len(ins), ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    _check(libc.prctl(22, 2, fbuf, 0, 0), "seccomp")  # PR_SET_SECCOMP, FILTER


def _drop_capabilities():
    """Drop every capability the episode's pid 1 holds in its user namespace (bounding, ambient, the sets)."""
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; EINVAL past the last cap
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, CLEAR_ALL
    header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0))
    data = ctypes.create_string_buffer(bytes(24))
    _check(libc.capset(header, data), "capset")


def _episode_root(opts, fds, agent):
    """In the episode's pid 1: mounts, limits, filters, then the agent's main; never returns."""
    stdin_r, stdout_w = fds
    try:
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for path in MASKED:
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0")
            elif os.path.exists(path):
                _mount("/dev/null", path, None, MS_BIND)
        for path in READ_ONLY:
            if os.path.exists(path):
                _mount(path, path, None, MS_BIND | MS_REC)
                _mount("none", path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        size = int(opts["workdir_bytes"])
        for path in ("/work", "/tmp", "/dev/shm"):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=%d,mode=1777" % size)
        _mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        limit = int(opts["memory_bytes"]) + agent._address_space()
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _deny_namespace_syscalls()
        _drop_capabilities()
        os.dup2(stdin_r, 0)
        os.dup2(stdout_w, 1)
        os.closerange(3, 65536)
        os.chdir("/work")
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/work"})
    except BaseException as exc:
        try:
            os.write(stdout_w, json.dumps({"setup_error": "%s: %s" % (type(exc).__name__, exc)}).encode() + b"\n")
        finally:
            os._exit(120)
    import io

    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)))
    try:
        status = agent.main(["--workdir", "/work", "--kill-all", "--nproc", str(int(opts["max_processes"]))])
    except BaseException:
        status = 1
    os._exit(status or 0)


def _open_episode(uid, opts, agent):
    """Fork the namespace maker; return ``(maker pid, its status reader, the agent's stdin writer, stdout reader)``.

    The maker writes the episode's pid 1 (as this process sees it) to the status pipe and exits;
    the supervisor reads it when the pipe is ready (``Supervisor.started``), so making a namespace
    set (milliseconds, most of it the network namespace) never stalls the other episodes' streams.
    """
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    st_r, st_w = os.pipe()
    maker = os.fork()
    if maker == 0:
        try:
            for fd in (in_w, out_r, st_r, 0, 1):
                os.close(fd)
            _check(libc.unshare(FLAGS), "unshare")
            with open("/proc/self/setgroups", "w") as fh:
                fh.write("deny")
            host_uid, host_gid = os.getuid(), os.getgid()
            with open("/proc/self/uid_map", "w") as fh:
                fh.write("%d %d 1" % (uid, host_uid))
            with open("/proc/self/gid_map", "w") as fh:
                fh.write("%d %d 1" % (uid, host_gid))
            root = os.fork()
            if root == 0:
                os.close(st_w)
                _episode_root(opts, (in_r, out_w), agent)
            os.write(st_w, str(root).encode())
        except BaseException as exc:
            try:
                os.write(out_w, json.dumps({"setup_error": "%s: %s" % (type(exc).__name__, exc)}).encode() + b"\n")
            except BaseException:
                pass
        os._exit(0)
    for fd in (in_r, out_w, st_w):
        os.close(fd)
    return maker, st_r, in_w, out_r


class Supervisor:
    """The select loop: frames in from the server, agent output out, episodes opened and reaped."""

    def __init__(self, agent):
        self.agent = agent
        self.inbuf = bytearray()
        self.episodes = {}  # ep -> dict(pid, stdin, stdout, pending, ns)
        self.by_out = {}
        self.by_status = {}  # maker's status reader -> ep, until ``started``
        self.dead = set()  # pids reaped before their episode learnt them
        self.next_uid = 1000

    def send(self, kind, ep, payload=b""):
        """Write one frame to the server, whole (the stream is blocking; the server always reads)."""
        data = ("%s %d %d\n" % (kind, ep, len(payload))).encode() + payload
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

    def open(self, ep, opts):
        """Make episode ``ep``'s namespace set; a failure reaches the server as the agent's first line."""
        uid = 1000 + (self.next_uid - 1000) % 60000
        self.next_uid += 1
        maker, st_r, in_w, out_r = _open_episode(uid, opts, self.agent)
        os.set_blocking(in_w, False)
        self.episodes[ep] = {"pid": None, "maker": maker, "status": st_r, "stdin": in_w, "stdout": out_r,
                             "pending": bytearray(), "ns": None}
        self.by_out[out_r] = ep
        self.by_status[st_r] = ep

    def started(self, ep):
        """Learn the episode's pid 1 from its maker (blocking only until the maker exits) and reap the maker."""
        e = self.episodes[ep]
        fd = e.pop("status")
        self.by_status.pop(fd, None)
        data = b""
        while True:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            data += chunk
        os.close(fd)
        try:
            os.waitpid(e["maker"], 0)
        except ChildProcessError:
            pass  # ``reap`` took it
        pid = int(data) if data else None
        if pid is not None and pid in self.dead:
            self.dead.discard(pid)  # it died already: never signal that pid again
            pid = None
        e["pid"] = pid
        if pid is not None:
            try:
                e["ns"] = os.readlink("/proc/%d/ns/pid" % pid)
            except OSError:
                pass

    def close(self, ep, status=None):
        """Kill the episode's pid 1 (the kernel ends the rest of its namespace), reap it, report ``X``."""
        if ep in self.episodes and "status" in self.episodes[ep]:
            self.started(ep)
        e = self.episodes.pop(ep, None)
        if e is None:
            return
        self.by_out.pop(e["stdout"], None)
        for fd in (e["stdin"], e["stdout"]):
            try:
                os.close(fd)
            except OSError:
                pass
        if e["pid"] is not None:
            try:
                os.kill(e["pid"], signal.SIGKILL)
            except OSError:
                pass
            try:
                _, raw = os.waitpid(e["pid"], 0)
                status = raw
            except ChildProcessError:
                pass
        self.send("X", ep, json.dumps({"status": status, "anomaly": self.anomaly(e["ns"])}).encode())

    def anomaly(self, ns):
        """What should not be there once an episode is gone; None when all is clean."""
        for path in HOST_WRITABLE:
            try:
                if os.listdir(path):
                    return "files in the host container's %s" % path
            except OSError:
                pass
        if ns is not None:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if os.readlink("/proc/%s/ns/pid" % entry) == ns:
                            return "process %s left in a closed episode's pid namespace" % entry
                    except OSError:
                        pass
        return None

    def frames(self):
        """Parse and apply whole frames from ``inbuf``."""
        while True:
            nl = self.inbuf.find(b"\n")
            if nl < 0:
                return
            kind, ep, size = self.inbuf[:nl].decode().split()
            ep, size = int(ep), int(size)
            if len(self.inbuf) < nl + 1 + size:
                return
            payload = bytes(self.inbuf[nl + 1:nl + 1 + size])
            del self.inbuf[:nl + 1 + size]
            if kind == "O":
                self.open(ep, json.loads(payload))
            elif kind == "D" and ep in self.episodes:
                self.episodes[ep]["pending"] += payload
                self.flush(ep)
            elif kind == "C":
                self.close(ep)

    def flush(self, ep):
        """Write what is pending for the episode's agent without blocking the loop."""
        e = self.episodes[ep]
        try:
            while e["pending"]:
                del e["pending"][:os.write(e["stdin"], e["pending"])]
        except BlockingIOError:
            pass
        except OSError:
            e["pending"].clear()

    def reap(self):
        """Reap exited children; an episode whose pid 1 died keeps its slot until the server closes it."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            known = False
            for e in self.episodes.values():
                if e["pid"] == pid:
                    e["pid"] = None  # its agent died: the server sees end of stream, then closes
                    known = True
                elif e.get("maker") == pid:
                    known = True
            if not known and self.by_status:
                self.dead.add(pid)  # perhaps a pid 1 whose maker has not reported it yet

    def serve(self):
        """Say hello, then move frames and agent output until the server's stream closes."""
        import select

        self.send("H", 0, json.dumps({"hello": "toolgym-nsd", "pid": os.getpid(), "uid": os.getuid()}).encode())
        while True:
            writers = [e["stdin"] for e in self.episodes.values() if e["pending"]]
            readers = [0, *self.by_out, *self.by_status]
            ready, writable, _ = select.select(readers, writers, [], 0.5)
            # The server's frames last: a close or an open among them may reuse a descriptor number
            # that is in ``ready`` for the episode it belonged to.
            for fd in sorted(ready, reverse=True):
                if fd == 0:
                    chunk = os.read(0, 1 << 20)
                    if not chunk:
                        return 0
                    self.inbuf += chunk
                    self.frames()
                elif fd in self.by_status:
                    self.started(self.by_status[fd])
                elif fd in self.by_out:
                    ep = self.by_out[fd]
                    try:
                        chunk = os.read(fd, 1 << 20)
                    except OSError:
                        chunk = b""
                    if chunk:
                        self.send("D", ep, chunk)
                    else:
                        self.by_out.pop(fd, None)
                        self.send("D", ep, b"")  # end of the agent's stream
            for ep, e in list(self.episodes.items()):
                if e["stdin"] in writable:
                    self.flush(ep)
            self.reap()


def main(argv):
    """Compile the agent, warm it, then supervise until the server closes the stream."""
    agent = types.ModuleType("toolgym_agent")
    exec(compile(argv[0], "agent.py", "exec"), agent.__dict__)
    cold = agent._address_space()
    agent._warm_imports()
    # What the warm imports added, as a cold agent measures it: a run's RLIMIT_AS is its memory
    # plus this, so its code has the room it has on the container tier.
    agent._WARM_BYTES[0] = max(0, agent._address_space() - cold)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    gc.freeze()  # the zygote's objects stay shared with every fork
    return Supervisor(agent).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
