"""The namespace tier's seccomp profile: Docker's default allowlist for an unprivileged container, plus namespaces.

Docker's default profile (moby ``profiles/seccomp/default.json``) allows ``unshare``, ``mount``
and ``clone`` with ``CLONE_NEW*`` flags only to containers holding ``CAP_SYS_ADMIN``; ours hold
no capability, so a host container of the namespace tier needs a profile of its own. This
module writes it (``python -m toolgym.server.sandbox.seccomp`` regenerates
``seccomp_namespace.json``; a test checks the committed file is what it writes). It is the
default profile as it resolves for a container with every capability dropped on x86_64 and
arm64, with these changes, and nothing else:

- added: ``unshare`` only when its flags are within user, mount, pid, ipc, uts and network
  namespaces (``SCMP_CMP_MASKED_EQ``: no other bit, so no cgroup or time namespace and no
  ``CLONE_FS``/``CLONE_FILES`` games), and ``mount`` (its arguments are pointers seccomp
  cannot read; the kernel allows it only inside a user namespace the caller made, and each
  episode then refuses it with a second filter, see ``nsd.py``);
- removed: ``ptrace``, ``process_vm_readv``/``process_vm_writev`` (Docker allows them on
  kernels >= 4.8; no episode needs to read another process's memory) and the ``io_uring_*``
  calls (a large kernel surface Python never uses).

``clone`` keeps Docker's mask (no ``CLONE_NEW*`` flag; namespaces are made with ``unshare``
then ``fork``), ``clone3`` still fails with ENOSYS (so libc falls back to ``clone``), and
``setns``, ``umount2``, ``pivot_root``, ``keyctl``, ``bpf``, ``perf_event_open`` stay refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["PROFILE_PATH", "UNSHARE_FLAGS", "build_profile", "profile_text"]

PROFILE_PATH = Path(__file__).with_name("seccomp_namespace.json")

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
UNSHARE_FLAGS = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
"""The only ``unshare`` flags the profile lets through (any subset of them)."""
CLONE_NEW_MASK = 0x7E020000
"""Every ``CLONE_NEW*`` flag ``clone`` may carry; Docker's rule for ``clone`` without CAP_SYS_ADMIN."""
AF_VSOCK = 40

ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32 clock_adjtime
clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2
execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork
fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
futex_time64 futex_waitv futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32
getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid
getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr
llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise membarrier memfd_create memfd_secret
mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify
mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl
msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open
openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64
pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield
seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg
sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat shmctl
shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice
stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate
truncate64 ugetrlimit umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice
wait4 waitid waitpid write writev
""".split()
"""Docker's unconditional allowlist (moby's default profile), minus the ``io_uring_*`` calls."""

PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
"""``personality`` values Docker allows (PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE and query)."""


def _allow(names: list[str], **extra: Any) -> dict[str, Any]:
    return {"names": names, "action": "SCMP_ACT_ALLOW", **extra}


def build_profile() -> dict[str, Any]:
    """The profile as a JSON-ready dict (see the module doc for each rule and why)."""
    syscalls: list[dict[str, Any]] = [_allow(sorted(ALLOWED))]
    syscalls.append(_allow(["socket"], args=[{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]))
    for value in PERSONALITIES:
        syscalls.append(_allow(["personality"], args=[{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]))
    syscalls.append(_allow(["arch_prctl", "modify_ldt"]))  # x86_64; unknown names are skipped on arm64
    syscalls.append(_allow(["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                            "cacheflush", "set_tls"]))
    syscalls.append(_allow(["clone"], args=[{"index": 0, "value": CLONE_NEW_MASK, "valueTwo": 0,
                                             "op": "SCMP_CMP_MASKED_EQ"}]))
    syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
    syscalls.append(_allow(["unshare"], args=[{"index": 0, "value": 0xFFFFFFFF & ~UNSHARE_FLAGS, "valueTwo": 0,
                                               "op": "SCMP_CMP_MASKED_EQ"}],
                           comment="namespace tier: user, mount, pid, ipc, uts and net namespaces only"))
    syscalls.append(_allow(["mount"], comment="namespace tier: /proc, tmpfs and masks inside the episode's"
                                              " own user namespace (each episode refuses it again)"))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": syscalls,
    }


def profile_text() -> str:
    """The profile file's exact text (sorted keys, two-space indent, final newline)."""
    return json.dumps(build_profile(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    PROFILE_PATH.write_text(profile_text(), encoding="utf-8")
    sys.stdout.write(f"wrote {PROFILE_PATH}\n")
