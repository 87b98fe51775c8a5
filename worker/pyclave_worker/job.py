"""Runs one job's code: a `transform(table, params)` or a `main([params])`."""

from __future__ import annotations

import builtins
import ctypes
import inspect
import json
import mmap
import os
import traceback
from types import FunctionType, TracebackType
from typing import Any, Callable, Optional

import pandas
import pyarrow
import pyarrow.ipc

from . import worker_pb2

Kind = worker_pb2.WorkerJob.Kind

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value

# Below this many rows, tables convert to and from pandas on the calling
# thread: starting Arrow's thread pool in a fresh worker costs more than it
# saves, and the zygote's warm-up (below) must start no thread.
_THREADED_CONVERSION_ROWS = 1_000_000

# `json.dumps` with any non-default option builds an encoder per call.
_JSON_ENCODER = json.JSONEncoder(allow_nan=False)

_WARM_UP_TRANSFORM = worker_pb2.WorkerJob(
    kind=Kind.KIND_TRANSFORM,
    code=(
        "def transform(table, params):\n"
        "    table = table[table['v'] % 2 == 0].assign(w=table['v'] * 2)\n"
        "    return table.groupby('k', as_index=False).agg(v=('v', 'sum'), w=('w', 'mean'), s=('s', 'first'))\n"
    ),
    filename="<warm-up>",
)
# What a worker rehearses: the commonest shape of a transform, kept small
# (the rehearsal's own work is paid by every worker that runs it).
_REHEARSAL_TRANSFORM = worker_pb2.WorkerJob(
    kind=Kind.KIND_TRANSFORM,
    code="def transform(table, params):\n    return table.groupby('k', as_index=False)['v'].sum()\n",
    filename="<rehearsal>",
)
# The input of both, an Arrow IPC file (built by `warm_up`).
_warm_up_input = b""


def warm_up() -> None:
    """Runs a small transform and an exec job through this module in the
    zygote, on its one thread: what pandas and pyarrow initialise on first
    use (groupby, IPC reading and writing, conversions) is done once here
    rather than in every worker (a fork of a zygote without it ran a small
    groupby transform in ~14 ms, with it in ~10 ms)."""
    global _warm_up_input
    frame = pandas.DataFrame({"k": [i % 3 for i in range(32)], "v": list(range(32)), "s": ["x"] * 32})
    table = pyarrow.Table.from_pandas(frame, nthreads=1)
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    _warm_up_input = sink.getvalue().to_pybytes()
    results = [
        _transform_on_own_files(_WARM_UP_TRANSFORM),
        _transform_on_own_files(_REHEARSAL_TRANSFORM),
        execute(worker_pb2.WorkerJob(kind=Kind.KIND_EXEC, code="def main(p):\n    return [p]\n"), None, None),
        execute(worker_pb2.WorkerJob(kind=Kind.KIND_EXEC, code="def main():\n    raise ValueError()\n"), None, None),
    ]
    if [result.WhichOneof("result") for result in results] != ["ok", "ok", "ok", "error"]:
        raise RuntimeError(f"pyclave zygote: the warm-up jobs went wrong: {results}")


def rehearse_transform() -> None:
    """Runs a small groupby through `execute`, in a worker before it
    reports ready (when recent jobs were mostly transforms): what a
    transform touches first is then copied from the zygote off the job's
    path (a 1,000-row groupby's ~1,600 page faults fall to ~70)."""
    _transform_on_own_files(_REHEARSAL_TRANSFORM)


def _transform_on_own_files(request: worker_pb2.WorkerJob) -> worker_pb2.JobResult:
    """`request` on the warm-up input, both files memfds of its own."""
    input_fd = os.memfd_create("pyclave-warm-up-input", os.MFD_CLOEXEC)
    os.write(input_fd, _warm_up_input)
    output_fd = os.memfd_create("pyclave-warm-up-output", os.MFD_CLOEXEC)
    return execute(request, input_fd, output_fd)  # closes both fds


def execute(request: worker_pb2.WorkerJob, input_fd: Optional[int],
            output_fd: Optional[int]) -> worker_pb2.JobResult:
    try:
        table = _read_input(input_fd) if input_fd is not None else None
    except Exception as error:  # noqa: BLE001  (any failure means a bad input file)
        return worker_pb2.JobResult(bad_input=f"{type(error).__name__}: {error}")
    try:
        return _run_user_code(request, table, output_fd)
    except BaseException as error:  # noqa: BLE001  (SystemExit and friends are user errors too)
        return worker_pb2.JobResult(error=_describe(error))


class _Mapping:
    """A read-only mapping of the input, unmapped when Arrow lets go of it."""

    def __init__(self, address: int, size: int) -> None:
        self.address, self.size = address, size

    def __del__(self) -> None:
        _libc.munmap(self.address, self.size)


def _read_input(fd: int) -> pyarrow.Table:
    """Maps the input read-only; pyarrow reads the buffers in place.

    Mapped with libc, not `mmap.mmap` (which keeps its own copy of the fd):
    once the fd is closed, the job cannot re-open the caller's file, even
    writable through /proc/self/fd, however its mode is set.
    """
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ValueError("the input table file is empty")
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), "cannot map the input table")
    finally:
        os.close(fd)
    buffer = pyarrow.foreign_buffer(address, size, base=_Mapping(address, size))
    return pyarrow.ipc.open_file(buffer).read_all()


def _run_user_code(request: worker_pb2.WorkerJob, table: Optional[pyarrow.Table],
                   output_fd: Optional[int]) -> worker_pb2.JobResult:
    namespace: dict[str, Any] = {"__name__": "__pyclave_job__", "__builtins__": builtins}
    exec(compile(request.code, request.filename, "exec"), namespace)
    params = json.loads(request.params_json) if request.params_json else {}

    kind = request.kind
    if kind == Kind.KIND_AUTO:
        kind = Kind.KIND_TRANSFORM if callable(namespace.get("transform")) else Kind.KIND_EXEC
    if kind == Kind.KIND_TRANSFORM:
        if output_fd is None:
            raise RuntimeError("pyclave: no output file for a transform job")
        transform = _entry_point(namespace, "transform")
        if table is None:
            frame = pandas.DataFrame()
        else:
            frame = table.to_pandas(split_blocks=True, use_threads=table.num_rows >= _THREADED_CONVERSION_ROWS)
        result = transform(frame, params)
        if not isinstance(result, pandas.DataFrame):
            raise TypeError(f"transform() must return a pandas DataFrame, not {type(result).__name__}")
        _write_output(result, output_fd)
        return worker_pb2.JobResult(ok=worker_pb2.JobOk(wrote_table=True))

    main = _entry_point(namespace, "main")
    value = main(params) if _takes_an_argument(main) else main()
    try:
        text = _JSON_ENCODER.encode(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"main() must return a JSON-serializable value: {error}") from None
    return worker_pb2.JobResult(ok=worker_pb2.JobOk(json=text))


def _entry_point(namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    function = namespace.get(name)
    if not callable(function):
        raise NameError(f"the job's code must define a function {name}()")
    return function


def _takes_an_argument(function: Callable[..., Any]) -> bool:
    if isinstance(function, FunctionType):  # the usual case: no need for inspect (slow in a fresh fork)
        code = function.__code__
        return code.co_argcount > 0 or bool(code.co_flags & inspect.CO_VARARGS)
    try:
        return len(inspect.signature(function).parameters) > 0
    except (TypeError, ValueError):
        return False


def _write_output(frame: pandas.DataFrame, fd: int) -> None:
    table = pyarrow.Table.from_pandas(frame, nthreads=None if len(frame) >= _THREADED_CONVERSION_ROWS else 1)
    with os.fdopen(fd, "wb") as sink, pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _describe(error: BaseException) -> worker_pb2.JobError:
    """The exception as the user should see it: without this module's frames."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return worker_pb2.JobError(
        type=name,
        message=str(error),
        traceback="".join(traceback.format_exception(kind, error, _user_frames(error.__traceback__))),
    )


def _user_frames(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb
