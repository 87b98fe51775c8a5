"""The zygote: imports pandas, pyarrow and numpy once, then forks workers.

It never runs a job's code. It serves the supervisor's `Spawn` commands on
the control socket, reaps its workers and reports each exit status. It must
be single-threaded whenever it forks: the supervisor starts it with OpenBLAS
and jemalloc background threads disabled, the warm-up below avoids Arrow's
thread pool, and the thread count is checked before it reports ready.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys

import numpy  # noqa: F401  (imported once here so every worker inherits it)
import pandas
import pyarrow
import pyarrow.ipc  # noqa: F401

from . import confine, job, wire, worker, worker_pb2

_MAX_COMMAND_FRAME_BYTES = 64 * 1024
_PR_SET_CHILD_SUBREAPER = 36


def main(control_fd: int) -> None:
    confine.set_process_name(b"pyclave-zygote")
    control = socket.socket(fileno=control_fd)
    control.setblocking(True)
    decoder = wire.FrameDecoder(_MAX_COMMAND_FRAME_BYTES)
    plan = _receive_plan(control, decoder)
    prepared = confine.prepare(plan)
    own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    _warm_up()
    _become_subreaper()
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    gc.freeze()
    confine.install_zygote_filter(plan)

    threads = len(os.listdir("/proc/self/task"))
    _send(control, worker_pb2.ZygoteEvent(
        ready=worker_pb2.ZygoteReady(pid=os.getpid(), thread_count=threads)
    ))
    if threads != 1:
        sys.exit(f"pyclave zygote: {threads} threads at start-up; forking would be unsafe")

    workers: set[int] = set()
    while True:
        readable, _, _ = select.select([control, wakeup_read], [], [])
        if wakeup_read in readable:
            _drain(wakeup_read)
            _reap(control, workers)
        if control in readable:
            data, fds = wire.recv_chunk(control)
            if not data:
                return  # the supervisor is gone
            decoder.feed(data, fds)
            while (frame := decoder.next_frame()) is not None:
                command = worker_pb2.ZygoteCommand.FromString(frame)
                if command.HasField("spawn"):
                    pid = _spawn(control, decoder, command.spawn, plan, prepared, own_pid_namespace)
                    if pid is not None:
                        workers.add(pid)
                else:
                    decoder.close_fds()


def _receive_plan(control: socket.socket, decoder: wire.FrameDecoder) -> worker_pb2.SandboxPlan:
    """The supervisor's first command: how every worker confines itself."""
    while (frame := decoder.next_frame()) is None:
        data, fds = wire.recv_chunk(control)
        if not data:
            sys.exit("pyclave zygote: the supervisor closed the channel before configuring")
        decoder.feed(data, fds)
    command = worker_pb2.ZygoteCommand.FromString(frame)
    if not command.HasField("configure"):
        sys.exit("pyclave zygote: the first command must be `configure`")
    plan = command.configure
    # The zygote's Python paths, bound read-only into every worker's root.
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    plan.read_only_paths.extend(sorted(paths - set(plan.read_only_paths)))
    return plan


def _warm_up() -> None:
    """Touches the code paths every job uses, without starting any thread."""
    frame = pandas.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    table = pyarrow.Table.from_pandas(frame, nthreads=1)
    table.to_pandas(use_threads=False, split_blocks=True)
    job.warm_up()


def _become_subreaper() -> None:
    """Orphaned processes of a job are reparented to us, and reaped here."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _spawn(control: socket.socket, decoder: wire.FrameDecoder, request: worker_pb2.Spawn,
           plan: worker_pb2.SandboxPlan, prepared: confine.Prepared, own_pid_namespace: int) -> int | None:
    """Forks one worker; returns its pid, or None when fork failed."""
    channel_fd, stdout_fd, stderr_fd = (decoder.take_fd() for _ in range(3))
    cgroup_fds = [decoder.take_fd() for _ in range(request.cgroup_fds)]
    passed = [channel_fd, stdout_fd, stderr_fd, *cgroup_fds]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if plan.namespaces:
            confine.enter_pid_namespace_for_next_fork(own_pid_namespace)
        pid = os.fork()
    except (OSError, confine.ConfinementError) as error:
        for fd in passed:
            os.close(fd)
        _send(control, worker_pb2.ZygoteEvent(
            spawn_failed=worker_pb2.SpawnFailed(worker_id=request.worker_id, error=str(error))
        ))
        return None
    if pid == 0:
        status = 70  # EX_SOFTWARE, should worker.run ever return or raise
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            worker.run(request, prepared, channel_fd, stdout_fd, stderr_fd, cgroup_fds)
        finally:
            os._exit(status)
    for fd in passed:
        os.close(fd)
    _send(control, worker_pb2.ZygoteEvent(
        spawned=worker_pb2.Spawned(worker_id=request.worker_id, pid=pid)
    ))
    return pid


def _reap(control: socket.socket, workers: set[int]) -> None:
    """Reaps every exited child; reports the workers' (orphans are not ours to report)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in workers:
            workers.discard(pid)
            _send(control, worker_pb2.ZygoteEvent(
                exited=worker_pb2.Exited(pid=pid, wait_status=status)
            ))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _send(control: socket.socket, event: worker_pb2.ZygoteEvent) -> None:
    wire.send_frame(control, event.SerializeToString())
