"""A worker: the child the zygote forks. Specialises, reports ready, runs one job, exits."""

from __future__ import annotations

import os
import socket
import sys
import time

from . import confine, job, wire, worker_pb2

# The job frame holds the code and params, which the supervisor has capped.
_MAX_JOB_FRAME_BYTES = 256 * 1024 * 1024


def run(spawn: worker_pb2.Spawn, prepared: confine.Prepared, channel_fd: int, stdout_fd: int,
        stderr_fd: int, cgroup_fds: list[int]) -> None:
    """Never returns normally: the process exits after its one job."""
    # Confinement comes before `ready`: nothing of a job has arrived yet, and
    # nothing after this point is trusted.
    started = time.perf_counter()
    try:
        prepared.confine_worker(spawn.uid, spawn.gid, channel_fd, stdout_fd, stderr_fd, cgroup_fds)
    except Exception as error:  # noqa: BLE001  (any failure: report it, serve nothing)
        _send(socket.socket(fileno=channel_fd),
              worker_pb2.WorkerEvent(confinement_failed=f"{type(error).__name__}: {error}"))
        os._exit(1)
    confinement_us = int((time.perf_counter() - started) * 1e6)
    channel = socket.socket(fileno=channel_fd)
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
