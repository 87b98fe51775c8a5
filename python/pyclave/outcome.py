"""Job outcomes: exactly one per job, as typed, immutable objects.

Every outcome carries the job's captured stdout/stderr and its resource
usage. Match on the class (`isinstance(outcome, Ok)`, or `match outcome:
case Ok(table=table): ...`) or on `outcome.kind`.
"""

from __future__ import annotations

import json as _json
import os
import signal as _signal
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pandas as pd

from pyclave._proto import api_pb2
from pyclave._tables import read_table_fd
from pyclave.errors import ProtocolError

OutcomeKind = Literal[
    "ok", "user_error", "timeout", "out_of_memory", "killed", "output_rejected", "rejected"
]
TimeoutClock = Literal["wall", "cpu", "unspecified"]


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What the job used, as measured by the supervisor."""

    #: From acceptance to the job reaching a worker.
    queue_time_us: int = 0
    #: From the job reaching a worker to its last process being gone.
    wall_time_us: int = 0
    cpu_time_us: int = 0
    peak_memory_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """Base of all outcomes: the job's output streams and its usage."""

    kind: ClassVar[OutcomeKind]

    stdout: bytes = b""
    #: More was written than the server's cap; `stdout` holds the first bytes.
    stdout_truncated: bool = False
    stderr: bytes = b""
    stderr_truncated: bool = False
    usage: Usage = field(default_factory=Usage)

    @property
    def ok(self) -> bool:
        """True only for `Ok`."""
        return False


@dataclass(frozen=True, kw_only=True, eq=False)
class Ok(Outcome):
    """The job finished: a table (transform jobs) and/or a JSON value (exec jobs).

    Compared by identity: a DataFrame has no single truth value for `==`.
    """

    kind: ClassVar[OutcomeKind] = "ok"

    table: pd.DataFrame | None = None
    #: The decoded JSON value (None when the job returned none).
    value: Any = None
    #: The JSON text as the job produced it ("" when there is none).
    json: str = ""

    @property
    def ok(self) -> bool:
        return True

    def __repr__(self) -> str:
        if self.table is None:
            table = "None"
        else:
            rows, columns = self.table.shape
            table = f"<DataFrame {rows} rows x {columns} columns>"
        return (
            f"Ok(table={table}, value={self.value!r}, stdout={self.stdout!r}, "
            f"stderr={self.stderr!r}, usage={self.usage!r})"
        )


@dataclass(frozen=True, kw_only=True)
class UserError(Outcome):
    """The job's code raised an exception."""

    kind: ClassVar[OutcomeKind] = "user_error"

    #: Qualified exception type, e.g. `ValueError` or `pandas.errors.ParserError`.
    type: str
    message: str
    traceback: str


@dataclass(frozen=True, kw_only=True)
class Timeout(Outcome):
    """The job ran past its wall-clock or CPU-time limit and was killed."""

    kind: ClassVar[OutcomeKind] = "timeout"

    clock: TimeoutClock
    limit_ms: int


@dataclass(frozen=True, kw_only=True)
class OutOfMemory(Outcome):
    """The job exceeded its memory limit and was killed."""

    kind: ClassVar[OutcomeKind] = "out_of_memory"

    limit_bytes: int
    peak_bytes: int


@dataclass(frozen=True, kw_only=True)
class Killed(Outcome):
    """The job's process died from a signal (for SIGSYS: a forbidden syscall)."""

    kind: ClassVar[OutcomeKind] = "killed"

    signal: int
    #: e.g. "SIGSEGV".
    signal_name: str


@dataclass(frozen=True, kw_only=True)
class OutputRejected(Outcome):
    """The job finished but its output table failed validation."""

    kind: ClassVar[OutcomeKind] = "output_rejected"

    reason: str


@dataclass(frozen=True, kw_only=True)
class Rejected(Outcome):
    """The job never started."""

    kind: ClassVar[OutcomeKind] = "rejected"

    #: e.g. "queue_full", "code_too_large", "script_not_found", "bad_request",
    #: "limit_too_high", "bad_input_table", "shutting_down", "too_many_jobs";
    #: "unspecified", or "unknown_<n>" for a code newer than this client.
    code: str
    reason: str


def outcome_from_proto(message: api_pb2.Outcome, table_fd: int | None = None) -> Outcome:
    """Converts a protobuf `Outcome` into an `Outcome` object.

    `table_fd` is the fd that came with the response frame when
    `message.ok.has_table` is set. This function takes ownership of it: it
    is closed whatever happens. Raises `ProtocolError` when the message and
    the fd do not fit together or the outcome is of a kind this client does
    not know.
    """
    try:
        return _convert(message, table_fd)
    finally:
        if table_fd is not None:
            os.close(table_fd)


def _convert(message: api_pb2.Outcome, table_fd: int | None) -> Outcome:
    common: dict[str, Any] = {
        "stdout": message.stdout.data,
        "stdout_truncated": message.stdout.truncated,
        "stderr": message.stderr.data,
        "stderr_truncated": message.stderr.truncated,
        "usage": Usage(
            queue_time_us=message.usage.queue_time_us,
            wall_time_us=message.usage.wall_time_us,
            cpu_time_us=message.usage.cpu_time_us,
            peak_memory_bytes=message.usage.peak_memory_bytes,
        ),
    }
    which = message.WhichOneof("kind")
    if which != "ok" and table_fd is not None:
        raise ProtocolError(f"a {which or 'empty'} outcome came with a table")
    match which:
        case "ok":
            return _ok(message.ok, table_fd, common)
        case "user_error":
            error = message.user_error
            return UserError(
                type=error.type, message=error.message, traceback=error.traceback, **common
            )
        case "timeout":
            return Timeout(
                clock=_clock_name(message.timeout.clock),
                limit_ms=message.timeout.limit_ms,
                **common,
            )
        case "out_of_memory":
            oom = message.out_of_memory
            return OutOfMemory(limit_bytes=oom.limit_bytes, peak_bytes=oom.peak_bytes, **common)
        case "killed":
            killed = message.killed
            return Killed(
                signal=killed.signal,
                signal_name=killed.signal_name or _signal_name(killed.signal),
                **common,
            )
        case "output_rejected":
            return OutputRejected(reason=message.output_rejected.reason, **common)
        case "rejected":
            rejected = message.rejected
            return Rejected(code=_rejected_code(rejected.code), reason=rejected.reason, **common)
        case _:
            raise ProtocolError(
                "the supervisor sent an outcome of a kind this client does not know"
            )


def _ok(ok: api_pb2.Ok, table_fd: int | None, common: dict[str, Any]) -> Ok:
    if ok.has_table and table_fd is None:
        raise ProtocolError("an Ok outcome announced a table but no file descriptor came with it")
    if table_fd is not None and not ok.has_table:
        raise ProtocolError("an Ok outcome without a table came with a file descriptor")
    value: Any = None
    if ok.json:
        try:
            value = _json.loads(ok.json)
        except ValueError as error:
            raise ProtocolError(f"the job's JSON value does not parse: {error}") from error
    table = read_table_fd(table_fd) if table_fd is not None else None
    return Ok(table=table, value=value, json=ok.json, **common)


def _clock_name(clock: int) -> TimeoutClock:
    if clock == api_pb2.Timeout.CLOCK_WALL:
        return "wall"
    if clock == api_pb2.Timeout.CLOCK_CPU:
        return "cpu"
    return "unspecified"


def _rejected_code(code: int) -> str:
    try:
        name: str = api_pb2.Rejected.Code.Name(code)
    except ValueError:
        return f"unknown_{code}"
    return name.removeprefix("CODE_").lower()


def _signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
