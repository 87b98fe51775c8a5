"""Confinement: what the zygote prepares once, and the native call that forks
each worker and confines it.

The worker's steps, in order, and what each stops, are in
worker/native/confine.c, which runs them: no Python runs in a worker before
it is confined, so it copies few of the zygote's pages. Here, once in the
zygote: the read-only root the zygote and every worker run in (built in
the zygote's own mount namespace and made its "/", so each worker only
copies it), the jobs' environment and
seccomp allowlist every worker inherits, and the plan laid out as the native
code reads it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from typing import NamedTuple

from . import worker_pb2

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

# mount_setattr(2) (Linux 5.12); the number of the generic syscall table
# (x86-64, arm64), as `pyclave doctor` probes it.
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

DEVICES = ("null", "zero", "full", "random", "urandom")

# `enum pyclave_tmp_entry_kind` in confine.c
BIND_DIRECTORY, BIND_FILE, SYMLINK = 0, 1, 2


class ConfinementError(Exception):
    """A layer could not be applied; the worker must not serve a job."""


class WorkerConfinementFailed(ConfinementError):
    """Raised in a new worker that could not confine itself: it reports
    this on its channel and exits."""

    def __init__(self, channel_fd: int, reason: str) -> None:
        super().__init__(reason)
        self.channel_fd = channel_fd


class ServingError(Exception):
    """The zygote cannot go on serving the supervisor."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(errno)}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


class _TmpEntry(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("source", ctypes.c_char_p), ("target", ctypes.c_char_p)]


class _Rlimit(ctypes.Structure):
    _fields_ = [("resource", ctypes.c_uint32), ("soft", ctypes.c_uint64), ("hard", ctypes.c_uint64)]


class _Plan(ctypes.Structure):
    _fields_ = [
        ("namespaces", ctypes.c_int32),
        ("own_pid_namespace", ctypes.c_int32),
        ("minimal_root", ctypes.c_int32),
        ("drop_privileges", ctypes.c_int32),
        ("tmp_mount_options", ctypes.c_char_p),
        ("tmp_entries", ctypes.POINTER(_TmpEntry)),
        ("tmp_entry_count", ctypes.c_uint64),
        ("rlimits", ctypes.POINTER(_Rlimit)),
        ("rlimit_count", ctypes.c_uint64),
        ("filters", ctypes.POINTER(_SockFprog)),
        ("filter_count", ctypes.c_uint64),
        ("numpy_random_state", ctypes.c_void_p),
    ]


class _Spawned(ctypes.Structure):
    _fields_ = [("channel_fd", ctypes.c_int32), ("started_fd", ctypes.c_int32), ("confinement_us", ctypes.c_uint64),
                ("rehearsal", ctypes.c_uint32), ("supervisor_fds", ctypes.c_int32 * 3),
                ("pages_copied", ctypes.c_uint64)]


class Recorder(NamedTuple):
    """What one of the zygote's recorders goes on with (worker.record)."""

    rehearsal: int  # worker_pb2.Rehearsal: the path it runs
    # Sends the runs of pages copied from the zygote's files so far
    # (native: pyclave_record_copied_pages) to the zygote.
    send_copied_pages: Callable[[], None]


class Spawned(NamedTuple):
    """What a new, confined worker goes on with (worker.run)."""

    channel_fd: int
    started_fd: int
    rehearsal: int  # worker_pb2.Rehearsal
    # Sends `ready` with the read ends of the worker's stdout, stderr and
    # start pipes (native: pyclave_report_ready), and closes them here.
    report_ready: Callable[[], None]


class Prepared:
    """The plan as the native code reads it, built once in the zygote; the
    workers inherit it (and everything it points to) at fork."""

    def __init__(self, plan: worker_pb2.SandboxPlan, tmp_entries: list[tuple[int, str, str]]) -> None:
        # PyDLL: the call keeps the GIL, so the zygote forks with its one
        # thread inside native code, and each worker returns into Python
        # only once it is confined.
        library = ctypes.PyDLL(plan.native_library, use_errno=True)
        self._serve = library.pyclave_serve
        self._serve.argtypes = [ctypes.POINTER(_Plan), ctypes.c_int, ctypes.POINTER(_Spawned), ctypes.c_char_p,
                                ctypes.c_size_t]
        self._serve.restype = ctypes.c_int
        self._report_ready_native = library.pyclave_report_ready
        self._report_ready_native.argtypes = [ctypes.POINTER(_Spawned)]
        self._report_ready_native.restype = ctypes.c_int
        self._record_copied_pages = library.pyclave_record_copied_pages
        self._record_copied_pages.argtypes = [ctypes.c_int]
        self._record_copied_pages.restype = ctypes.c_int
        self._error = ctypes.create_string_buffer(512)
        own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if plan.namespaces else -1
        # Everything the plan points to stays referenced here.
        self._tmp_mount_options = f"size={plan.tmp_size_bytes},mode=1777".encode()
        self._tmp_entries = (_TmpEntry * len(tmp_entries))(
            *(_TmpEntry(kind, source.encode(), target.encode()) for kind, source, target in tmp_entries)
        )
        self._rlimits = (_Rlimit * len(plan.rlimits))(
            *(_Rlimit(limit.resource, limit.soft, limit.hard) for limit in plan.rlimits)
        )
        self._programs = [ctypes.create_string_buffer(program, len(program)) for program in plan.seccomp_filters]
        self._filters = (_SockFprog * len(self._programs))(
            *(_SockFprog(len(program) // 8, ctypes.addressof(program)) for program in self._programs)
        )
        self._plan = _Plan(
            plan.namespaces, own_pid_namespace, plan.minimal_root, plan.drop_privileges,
            self._tmp_mount_options, self._tmp_entries, len(tmp_entries), self._rlimits, len(plan.rlimits),
            self._filters, len(self._programs), _numpy_random_state(),
        )
        # Otherwise the worker reseeds numpy from Python.
        self.reseeds_numpy = bool(self._plan.numpy_random_state)

    def serve(self, control_fd: int) -> Spawned | Recorder | None:
        """Serves the supervisor's spawn commands in native code
        (worker/native/zygote.c): forks workers, each confined first thing,
        and reaps them.

        Returns None in the zygote once the supervisor has closed the channel
        (raises ServingError if it cannot go on). Returns what it goes on
        with in each new, confined worker, and in each recorder the zygote
        forks first (worker/native/prefault.c);
        raises WorkerConfinementFailed in a worker that could not confine
        itself.
        """
        spawned = _Spawned()
        result = self._serve(ctypes.byref(self._plan), control_fd, ctypes.byref(spawned), self._error,
                             len(self._error))
        reason = self._error.value.decode(errors="replace")
        if result == 1:
            return None
        if result == 0:
            return Spawned(spawned.channel_fd, spawned.started_fd, spawned.rehearsal,
                           functools.partial(self._report_ready, spawned))
        if result == 2:
            return Recorder(spawned.rehearsal, functools.partial(self._send_copied_pages, spawned.channel_fd))
        if result == -2:
            raise WorkerConfinementFailed(spawned.channel_fd, reason)
        raise ServingError(reason)

    def _report_ready(self, spawned: _Spawned) -> None:
        if self._report_ready_native(spawned) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"report ready: {os.strerror(errno)}")

    def _send_copied_pages(self, fd: int) -> None:
        if self._record_copied_pages(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"record the pages copied: {os.strerror(errno)}")


def _numpy_random_state() -> int | None:
    """The address of numpy's global MT19937 state, for the native code to
    reseed in each worker; None unless numpy's own view of it matches the
    layout confine.c writes (624 key words, then the position) and no
    normal draw is cached beside it."""
    import numpy

    generator = numpy.random.mtrand._rand._bit_generator
    try:
        address = generator.ctypes.state_address
        state = generator.state["state"]
        key, position = state["key"], state["pos"]
    except (AttributeError, KeyError, TypeError):
        return None
    words = len(key)
    if words != 624 or ctypes.string_at(address, words * 4) != key.astype("<u4").tobytes():
        return None
    if numpy.random.get_state()[3]:  # a cached normal draw the native reseed would not clear
        return None
    if ctypes.c_int.from_address(address + words * 4).value != position:
        return None
    return address


def prepare(plan: worker_pb2.SandboxPlan) -> Prepared:
    """In the zygote, once, before any fork: the workers' root (when that
    layer is on), the jobs' environment (the zygote has imported all it
    needs; `os.environ` and the process environment change together), and
    the plan for `Prepared.serve`."""
    tmp_entries = _prepare_root(plan) if plan.minimal_root else []
    os.environ.clear()
    os.environ.update(plan.environment)
    return Prepared(plan, tmp_entries)


def set_process_name(name: bytes) -> None:
    """What `ps` and `top` show (and profilers group by): 15 bytes at most."""
    _check(_libc.prctl(PR_SET_NAME, name, 0, 0, 0), "prctl(PR_SET_NAME)")


def install_zygote_filter(plan: worker_pb2.SandboxPlan) -> None:
    """In the zygote, once, before it forks any worker: the jobs' allowlist
    plus the syscalls workers confine themselves with. Every worker inherits
    it at fork, so the long allowlist is compiled by the kernel once, not
    per worker; a worker's own `confinement` filter takes those syscalls away."""
    if plan.zygote_seccomp_filter:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        program = ctypes.create_string_buffer(plan.zygote_seccomp_filter, len(plan.zygote_seccomp_filter))
        fprog = _SockFprog(len(plan.zygote_seccomp_filter) // 8, ctypes.addressof(program))
        _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def _mount(source: bytes | None, target: str, fstype: bytes | None, flags: int,
           data: bytes | None = None) -> None:
    _check(_libc.mount(source, target.encode(), fstype, flags, data), f"mount {target}")


def _prepare_root(plan: worker_pb2.SandboxPlan) -> list[tuple[int, str, str]]:
    """Builds every worker's root in the zygote's own mount namespace and
    makes it the zygote's "/": a read-only tmpfs with the read-only binds,
    /dev, a /proc of the zygote's, and mount points for /tmp and /dev/shm.
    Each worker then copies this small tree (not the host's) when it
    unshares its mount namespace, and covers /tmp, /dev/shm and /proc with
    its own mounts; it never needs to detach an old root (which makes the
    kernel wait for an RCU grace period while the worker confines itself).

    Read-only paths under /tmp are bound there too, for the zygote; each
    worker's private /tmp covers them, and the entries returned say how the
    worker binds them again inside it.
    """
    if not plan.namespaces:
        raise ConfinementError("the minimal root needs the namespaces layer")
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS) in the zygote")
    root = plan.root_mount_point
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do propagates to the host
    _mount(b"tmpfs", root, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755")
    for name in ("tmp", "proc"):
        os.mkdir(f"{root}/{name}")
    _make_dev(root + "/dev")
    tmp_entries = []
    bound_under_tmp: list[str] = []
    for path in plan.read_only_paths:
        kind = _path_kind(path)
        if kind is None:
            continue
        _bind_read_only(path, root + path, kind)
        # Relative to the worker's private /tmp; a path inside a directory
        # bound before it comes with that one (binds are recursive).
        if (path == "/tmp" or path.startswith("/tmp/")) and not _inside_any(path, bound_under_tmp):
            target = path[len("/tmp/"):] or "."
            tmp_entries.append((kind, os.readlink(path) if kind == SYMLINK else path, target))
            if kind == BIND_DIRECTORY:
                bound_under_tmp.append(path)
    _mount(None, root + "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    # While the host's /proc is visible: in a user namespace (rootless) the
    # kernel mounts a new proc only then, and each worker's own proc then
    # needs this one.
    _mount(b"proc", root + "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    error = ctypes.create_string_buffer(256)
    if ctypes.CDLL(plan.native_library, use_errno=True).pyclave_switch_root(root.encode(), error, len(error)) != 0:
        raise ConfinementError(error.value.decode(errors="replace"))
    return tmp_entries


def _inside_any(path: str, directories: list[str]) -> bool:
    return any(path.startswith(directory.rstrip("/") + "/") for directory in directories)


def _path_kind(path: str) -> int | None:
    if os.path.islink(path):
        return SYMLINK
    if not os.path.exists(path):
        return None
    return BIND_DIRECTORY if os.path.isdir(path) else BIND_FILE


def _bind_read_only(source: str, target: str, kind: int) -> None:
    """Binds `source` at `target`, read-only; a symlink is recreated instead."""
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if kind == SYMLINK:
        if not os.path.lexists(target):
            os.symlink(os.readlink(source), target)
        return
    if kind == BIND_DIRECTORY:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        open(target, "w").close()
    _mount(source.encode(), target, None, MS_BIND | MS_REC)
    # Every mount the recursive bind copied, not only its top (a remount
    # changes one mount): a host mount under `source` stays read-only too.
    # Flags are only added, so those a user namespace (rootless) may not
    # clear, such as noexec, stay.
    attributes = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, target.encode(), AT_RECURSIVE, ctypes.byref(attributes),
                         ctypes.sizeof(attributes)),
           f"make {target} and the mounts under it read-only (mount_setattr, Linux 5.12)")


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
