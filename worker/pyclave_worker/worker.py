"""A worker: the child the zygote forks, confined before any Python runs in
it (worker/native/confine.c). Reports ready, runs one job, exits."""

from __future__ import annotations

import os
import random
import socket
import sys
import time

import numpy

from . import confine, job, wire, worker_pb2

# The job frame holds the code and params, which the supervisor has capped.
_MAX_JOB_FRAME_BYTES = 256 * 1024 * 1024

# A job the worker runs on itself before `ready` (see `rehearse`).
_REHEARSAL = worker_pb2.WorkerJob(
    kind=worker_pb2.WorkerJob.KIND_EXEC, code="def main():\n    return None\n", filename="<rehearsal>"
).SerializeToString()


def run(spawned: confine.Spawned, numpy_reseeded: bool) -> None:
    """In the confined worker; never returns normally: the process exits
    after its one job. `ready` hands the supervisor the read ends of the
    worker's stdout, stderr and start pipes. Once the job has arrived, one
    byte into the start pipe (closed before the user's code runs) tells the
    supervisor, should the worker die, that the job reached it."""
    channel = socket.socket(fileno=spawned.channel_fd)
    _reseed(numpy_reseeded)
    _rehearse_as(spawned.rehearsal)
    spawned.report_ready()
    _serve_one_job(channel, spawned.started_fd)
    os._exit(0)


def _serve_one_job(channel: socket.socket, started_fd: int) -> None:
    """A job's path from its frame to its result: the job arrives on
    `channel` (with its table fds), one byte into `started_fd` (then closed)
    says it did, the result goes back on `channel`. Returns at once if the
    channel closed first (the supervisor retired the worker). The rehearsal
    runs this very function, so a job touches nothing it has not touched
    already."""
    reader = wire.FrameReader(channel, _MAX_JOB_FRAME_BYTES)
    frame = reader.read_frame()
    if frame is None:
        return
    request = worker_pb2.WorkerJob.FromString(frame)
    input_fd = reader.take_fd() if request.has_input_table else None
    output_fd = reader.take_fd() if request.has_output_table else None
    os.write(started_fd, b"\x01")
    os.close(started_fd)
    result = job.execute(request, input_fd, output_fd)
    sys.stdout.flush()
    sys.stderr.flush()
    _send_result(channel, result)


def record(recorder: confine.Recorder, numpy_reseeded: bool) -> None:
    """In one of the zygote's recorders (worker/native/prefault.c),
    unconfined: a worker's path without its confinement (the reseed, then
    the rehearsal `recorder` says: a trivial job's path, or a transform's
    too), and the pages that copied from the zygote's, which every worker
    warmed that way then copies at once. Never returns: the process exits."""
    try:
        _reseed(numpy_reseeded)
        _rehearse_as(recorder.rehearsal)
        recorder.send_copied_pages()
    except Exception as error:  # the zygote goes on without what it records
        print(f"pyclave zygote's recorder: {error!r}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


def report_confinement_failure(channel_fd: int, reason: str) -> None:
    """In a worker that could not confine itself: it serves nothing."""
    _send(socket.socket(fileno=channel_fd), worker_pb2.WorkerEvent(confinement_failed=reason))


def _reseed(numpy_reseeded: bool) -> None:
    """Every job gets its own random streams, not a copy of the zygote's
    (the worker is forked without CPython's after-fork hooks, which reseed
    `random`; numpy never reseeds by itself: the native fork does it when it
    can, more cheaply)."""
    random.seed()
    if not numpy_reseeded:
        numpy.random.seed()


def _rehearse_as(rehearsal: int) -> None:
    """The rehearsal `rehearsal` (worker_pb2.Rehearsal) names."""
    if rehearsal != worker_pb2.REHEARSAL_NONE:
        rehearse()
    if rehearsal == worker_pb2.REHEARSAL_EXEC_AND_TRANSFORM:
        job.rehearse_transform()


def rehearse() -> None:
    """Runs a trivial job's path once, off the job's clock, through a
    socket pair and a pipe of its own: the pages a job touches first
    (interpreter state, the frame reader, protobuf, the compiler, json) are
    copied from the zygote now rather than while the caller waits."""
    ours, theirs = socket.socketpair()
    started_read, started_write = os.pipe()
    with ours, theirs:
        wire.send_frame(theirs, _REHEARSAL)
        _serve_one_job(ours, started_write)
    os.close(started_read)


def _send_result(channel: socket.socket, result: worker_pb2.JobResult) -> None:
    """The result, with the worker's own CPU time so far."""
    result.process_cpu_us = time.process_time_ns() // 1000
    _send(channel, worker_pb2.WorkerEvent(result=result))


def _send(channel: socket.socket, event: worker_pb2.WorkerEvent) -> None:
    wire.send_frame(channel, event.SerializeToString())
