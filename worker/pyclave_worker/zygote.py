"""The zygote: imports pandas, pyarrow and numpy once, then forks workers.

It never runs a job's code. Once ready, it serves the supervisor's `Spawn`
commands on the control socket in native code (worker/native/zygote.c),
which forks and reaps the workers and reports each exit status: no Python
runs in the zygote between forks. It must be single-threaded whenever it
forks: the supervisor starts it with OpenBLAS and jemalloc background
threads disabled, the warm-up avoids Arrow's thread pool, and the thread
count is checked before it reports ready. Each worker comes back
from the native call into Python already confined (no CPython after-fork
hooks run: there are no other threads to make safe, and the worker reseeds
its random generators itself).
"""

from __future__ import annotations

import gc
import importlib
import os
import socket
import sys
from collections.abc import Callable
from typing import TypeVar

from . import confine, memory, wire, worker_pb2

# Imported once in the zygote, so that every worker inherits them; only once
# CPython's object arenas come from their region (see `memory`).
_LIBRARIES = ("numpy", "pandas", "pyarrow", "pyarrow.ipc")

T = TypeVar("T")

_MAX_COMMAND_FRAME_BYTES = 64 * 1024
_PR_SET_CHILD_SUBREAPER = 36


def main(control_fd: int) -> None:
    confine.set_process_name(b"pyclave-zygote")
    control = socket.socket(fileno=control_fd)
    control.setblocking(True)
    decoder = wire.FrameDecoder(_MAX_COMMAND_FRAME_BYTES)
    plan = _receive_plan(control, decoder)
    layout = memory.Layout(plan.native_library)
    _optional(layout.back_object_arenas)
    for library in _LIBRARIES:
        importlib.import_module(library)
    # Imports job, pandas and pyarrow: after the arenas moved.
    from . import worker

    prepared = confine.prepare(plan)
    _warm_up()
    _become_subreaper()
    gc.collect()  # the warm-up's garbage is not frozen into every worker
    gc.freeze()
    mappings = _optional(layout.merge_library_mappings) or 0
    confine.install_zygote_filter(plan)

    threads = len(os.listdir("/proc/self/task"))
    _send(control, worker_pb2.ZygoteEvent(
        ready=worker_pb2.ZygoteReady(
            pid=os.getpid(), thread_count=threads, mapping_count=mappings
        )
    ))
    if threads != 1:
        sys.exit(f"pyclave zygote: {threads} threads at start-up; forking would be unsafe")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        spawned = prepared.serve(control.fileno())
    except confine.WorkerConfinementFailed as failure:
        try:
            worker.report_confinement_failure(failure.channel_fd, str(failure))
        finally:
            os._exit(1)
    except confine.ServingError as error:
        sys.exit(f"pyclave zygote: {error}")
    if spawned is None:
        return  # the supervisor is gone
    try:
        if isinstance(spawned, confine.Recorder):
            worker.record(spawned, prepared.reseeds_numpy)
        else:
            worker.run(spawned, prepared.reseeds_numpy)
    finally:
        os._exit(70)  # EX_SOFTWARE: neither returns nor raises


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
    """Runs the code paths jobs use, without starting any thread, often
    enough that CPython 3.11 has specialised their bytecode and filled its
    type-attribute cache: a worker that finds them so writes to fewer pages
    it shares with the zygote (a trivial job's worker: ~490 -> ~425
    copy-on-write faults, ~8 % more jobs/s)."""
    from . import job, worker  # imported in `main`, after the arenas moved

    for _ in range(3):
        job.warm_up()
    for _ in range(20):
        worker.rehearse()


def _optional(step: Callable[[], T]) -> T | None:
    """Runs a step that only makes forks cheaper: its failure is reported
    (in the supervisor's log) and the zygote goes on without it."""
    try:
        return step()
    except OSError as error:
        print(f"pyclave zygote: {error}; workers fork without it", file=sys.stderr)
        return None


def _become_subreaper() -> None:
    """Orphaned processes of a job are reparented to us, and reaped here."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _send(control: socket.socket, event: worker_pb2.ZygoteEvent) -> None:
    wire.send_frame(control, event.SerializeToString())
