"""Confines a freshly forked worker, layer by layer, before it reports ready.

Runs as root in the child, which the zygote forked as pid 1 of a new pid
namespace. The order matters and each step says what it stops:

1. join the job's cgroup        memory, CPU and pids limits cover everything after
2. namespaces                   no view of host mounts, network, IPC, hostname, cgroups
3. minimal read-only root       no host files beyond Python and its libraries;
                                private capped tmpfs for /tmp and /dev/shm
4. rlimits                      core dumps, huge files, fd and process floods
5. clean environment, fds       no secrets inherited from the supervisor
6. unprivileged uid, user ns    no root, no capabilities, nothing to regain them with
7. seccomp                      no syscalls outside the reviewed allowlist. The
                                zygote installed the allowlist, widened by the few
                                syscalls of the steps above; the worker takes those
                                away last (and adds the errno filters)
"""

from __future__ import annotations

import ctypes
import os
import resource
from typing import Iterable, Sequence

from . import worker_pb2

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
# NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE, each with its lock, and
# KEEP_CAPS locked off.
SECUREBITS_LOCKED_DOWN = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
SYS_PIVOT_ROOT = 155
SYS_CAPSET = 126
LINUX_CAPABILITY_VERSION_3 = 0x20080522

DEVICES = ("null", "zero", "full", "random", "urandom")
HOSTNAME = b"pyclave"


class ConfinementError(Exception):
    """A layer could not be applied; the worker must not serve a job."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(errno)}")


def enter_pid_namespace_for_next_fork(own_pid_namespace: int) -> None:
    """Called in the zygote before each fork: the child becomes pid 1 of a new
    pid namespace (its processes see only each other; when it exits, they die).

    `setns` back to our own namespace first: unshare(CLONE_NEWPID) works only
    while our children would still be born in it.
    """
    _check(_libc.setns(own_pid_namespace, CLONE_NEWPID), "setns(pid)")
    _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")


def apply(plan: worker_pb2.SandboxPlan, uid: int, gid: int, cgroup_fds: Sequence[int],
          keep_fds: Iterable[int], report_fd: int, root_prepared: bool) -> None:
    _join_cgroups(cgroup_fds)
    if plan.namespaces:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP),
               "unshare(mount, net, ipc, uts, cgroup)")
        _check(_libc.sethostname(HOSTNAME, len(HOSTNAME)), "sethostname")
    if plan.minimal_root:
        _build_root(plan, root_prepared)
    for limit in plan.rlimits:
        resource.setrlimit(limit.resource, (limit.soft, limit.hard))
    os.environ.clear()
    os.environ.update(plan.environment)
    _close_fds_except(set(keep_fds))
    if plan.drop_privileges:
        _drop_privileges(uid, gid, user_namespace=plan.namespaces)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if plan.seccomp_filters:
        if _install_sigsys_reporter is not None:
            _check(_install_sigsys_reporter(report_fd), "SIGSYS reporter")
        for program in plan.seccomp_filters:
            _install_seccomp(program)


# The native reporter's entry point, resolved once in the zygote.
_install_sigsys_reporter = None


def load_sigsys_library(plan: worker_pb2.SandboxPlan) -> None:
    """Maps the native reporter in the zygote, so workers need neither its
    file nor a symbol lookup."""
    global _install_sigsys_reporter
    if plan.sigsys_library:
        _install_sigsys_reporter = ctypes.CDLL(plan.sigsys_library).pyclave_install_sigsys_reporter


def install_zygote_filter(plan: worker_pb2.SandboxPlan) -> None:
    """In the zygote, once, before it forks any worker: the jobs' allowlist
    plus the syscalls workers confine themselves with. Every worker inherits
    it at fork, so the long allowlist is compiled by the kernel once, not
    per worker; a worker's own `confinement` filter takes those syscalls away."""
    if plan.zygote_seccomp_filter:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _install_seccomp(plan.zygote_seccomp_filter)


def _join_cgroups(cgroup_fds: Sequence[int]) -> None:
    for fd in cgroup_fds:
        os.write(fd, b"0")  # "0" moves the writing process
        os.close(fd)


def _mount(source: bytes | None, target: str, fstype: bytes | None, flags: int,
           data: bytes | None = None) -> None:
    _check(_libc.mount(source, target.encode(), fstype, flags, data), f"mount {target}")


def prepare_root(plan: worker_pb2.SandboxPlan) -> bool:
    """In the zygote, once: builds the read-only part of every worker's root
    in the zygote's own mount namespace, which each worker copies when it
    unshares its own (a few dozen bind mounts less per worker). Returns
    whether it did: paths under /tmp must go into each worker's private /tmp,
    so then every worker builds its whole root.
    """
    if not (plan.minimal_root and plan.namespaces):
        return False
    if any(path == "/tmp" or path.startswith("/tmp/") for path in plan.read_only_paths):
        return False
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS) in the zygote")
    _lay_out_root(plan, private_tmp=False)
    return True


def _lay_out_root(plan: worker_pb2.SandboxPlan, private_tmp: bool) -> None:
    """A tmpfs root with the read-only binds, /dev, and mount points for
    /proc and /tmp (mounted here first when it must hold binds)."""
    new_root = plan.root_mount_point
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do propagates to the host
    _mount(b"tmpfs", new_root, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755")
    for name in ("tmp", "proc"):
        os.mkdir(f"{new_root}/{name}")
    if private_tmp:
        _mount_private_tmpfs(new_root + "/tmp", plan)
    for path in plan.read_only_paths:
        _bind_read_only(path, new_root + path)
    _make_dev(new_root + "/dev")


def _build_root(plan: worker_pb2.SandboxPlan, prepared: bool) -> None:
    root = plan.root_mount_point
    if not prepared:
        _lay_out_root(plan, private_tmp=True)
    else:
        _mount_private_tmpfs(root + "/tmp", plan)
    # From here on nothing writes to the root's tmpfs: with a prepared root
    # it is shared (read-only) by every worker.
    _mount_private_tmpfs(root + "/dev/shm", plan, executable=False)
    # Before the old root goes: in a user namespace (rootless) the kernel
    # mounts a new proc only while a full one is visible.
    _mount(b"proc", root + "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # pivot_root(".", ".") stacks the old root on the new one; detaching
    # the top of "/" then drops it, without a directory to park it in.
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mount_private_tmpfs(target: str, plan: worker_pb2.SandboxPlan, executable: bool = True) -> None:
    flags = MS_NOSUID | MS_NODEV | (0 if executable else MS_NOEXEC)
    _mount(b"tmpfs", target, b"tmpfs", flags, f"size={plan.tmp_size_bytes},mode=1777".encode())


def _bind_read_only(source: str, target: str) -> None:
    """Binds `source` at `target`, read-only; a symlink is recreated instead."""
    if os.path.islink(source):
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(source), target)
        return
    if not os.path.exists(source):
        return
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        open(target, "w").close()
    _mount(source.encode(), target, None, MS_BIND | MS_REC)
    # A user namespace (rootless) may not clear flags the source mount has.
    kept = MS_NOEXEC if os.statvfs(source).f_flag & os.ST_NOEXEC else 0
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)


def _make_dev(dev: str) -> None:
    os.mkdir(dev)
    _mount(b"tmpfs", dev, b"tmpfs", MS_NOSUID | MS_NOEXEC, b"size=64k,mode=0755")
    for name in DEVICES:
        target = f"{dev}/{name}"
        open(target, "w").close()
        _mount(f"/dev/{name}".encode(), target, None, MS_BIND)
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                       ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(link, f"{dev}/{name}")
    # Mount point of the private /dev/shm (POSIX shared memory: multiprocessing).
    os.mkdir(f"{dev}/shm")
    _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own fd, already closed


def _drop_privileges(uid: int, gid: int, user_namespace: bool) -> None:
    if uid == 0 or gid == 0:
        raise ConfinementError("refusing to run a job as uid or gid 0")
    _drop_bounding_and_ambient_capabilities()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # from root: the permitted and effective sets empty
    if user_namespace:
        # Dumpable only while we write our own id maps (the uid change made
        # /proc/self root-owned); the same uid inside as outside, never 0.
        _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")
        _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as map_file:
                map_file.write(text)
        _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "not dumpable")
        # The new namespace handed out a full capability set: drop it for good.
        _drop_bounding_and_ambient_capabilities()
        _check(_libc.prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_DOWN, 0, 0, 0), "securebits")
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.syscall(SYS_CAPSET, header, data), "capset")


def _drop_bounding_and_ambient_capabilities() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as last:
        last_cap = int(last.read())
    for cap in range(last_cap + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap} from the bounding set")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp(program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
