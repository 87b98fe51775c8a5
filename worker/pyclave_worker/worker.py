"""A worker: the child the zygote forks. Specialises, reports ready, runs one job, exits."""

from __future__ import annotations

import os
import socket
import sys
import time

from . import confine, job, wire, worker_pb2

# The job frame holds the code and params, which the supervisor has capped.
_MAX_JOB_FRAME_BYTES = 256 * 1024 * 1024


def run(spawn: worker_pb2.Spawn, plan: worker_pb2.SandboxPlan, root_prepared: bool, channel_fd: int,
        stdout_fd: int, stderr_fd: int, cgroup_fds: list[int], inherited: list[int]) -> None:
    """Never returns normally: the process exits after its one job."""
    for fd in inherited:
        os.close(fd)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    os.close(stdout_fd)
    os.close(stderr_fd)
    # The job's own subprocesses must not hold the channel open.
    os.set_inheritable(channel_fd, False)
    channel = socket.socket(fileno=channel_fd)
    # Confinement comes before `ready`: nothing of a job has arrived yet, and
    # nothing after this point is trusted.
    started = time.perf_counter()
    try:
        confine.apply(plan, spawn.uid, spawn.gid, cgroup_fds,
                      keep_fds=(0, 1, 2, channel_fd), report_fd=channel_fd, root_prepared=root_prepared)
    except Exception as error:  # noqa: BLE001  (any failure: report it, serve nothing)
        _send(channel, worker_pb2.WorkerEvent(confinement_failed=f"{type(error).__name__}: {error}"))
        os._exit(1)
    confinement_us = int((time.perf_counter() - started) * 1e6)
    _send(channel, worker_pb2.WorkerEvent(ready=worker_pb2.WorkerReady(confinement_us=confinement_us)))

    reader = wire.FrameReader(channel, _MAX_JOB_FRAME_BYTES)
    frame = reader.read_frame()
    if frame is None:
        os._exit(0)  # retired by the supervisor before it got a job
    request = worker_pb2.WorkerJob.FromString(frame)
    input_fd = reader.take_fd() if request.has_input_table else None
    output_fd = reader.take_fd() if request.has_output_table else None
    _send(channel, worker_pb2.WorkerEvent(started=worker_pb2.JobStarted()))
    result = job.execute(request, input_fd, output_fd)
    sys.stdout.flush()
    sys.stderr.flush()
    _send(channel, worker_pb2.WorkerEvent(result=result))
    os._exit(0)


def _send(channel: socket.socket, event: worker_pb2.WorkerEvent) -> None:
    wire.send_frame(channel, event.SerializeToString())
