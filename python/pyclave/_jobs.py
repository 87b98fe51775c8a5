"""Request building and response decoding, shared by the sync and async clients.

The clients only move frames and fds; everything about what goes into a
`Request` and what comes out of a `Response` lives here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import DecodeError

from pyclave import _wire
from pyclave._proto import api_pb2
from pyclave._tables import TableLike, write_table_memfd
from pyclave.errors import ProtocolError
from pyclave.limits import Limits
from pyclave.outcome import Outcome, outcome_from_proto

JobKindName = Literal["auto", "transform", "exec"]

DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024

_KINDS: dict[str, int] = {
    "auto": api_pb2.JOB_KIND_AUTO,
    "transform": api_pb2.JOB_KIND_TRANSFORM,
    "exec": api_pb2.JOB_KIND_EXEC,
}


@dataclass
class PreparedJob:
    """A `Job` message and the input-table fd (if any) that must travel with it.

    Owns the fd: `close()` it once the frame is sent (or abandoned).
    """

    job: api_pb2.Job
    input_fd: int | None = None

    @property
    def fds(self) -> list[int]:
        return [] if self.input_fd is None else [self.input_fd]

    def close(self) -> None:
        fd, self.input_fd = self.input_fd, None
        if fd is not None:
            os.close(fd)


def prepare_job(
    *,
    kind: JobKindName,
    code: str | None,
    script: str | None,
    table: TableLike | None,
    params: Mapping[str, Any] | None,
    limits: Limits,
) -> PreparedJob:
    """Validates the arguments of a job and builds it (writing the input table to a memfd)."""
    job = api_pb2.Job(
        kind=_job_kind(kind), params_json=_params_json(params), limits=limits.to_proto()
    )
    if (code is None) == (script is None):
        raise TypeError("pass exactly one of code= (inline source) and script= (a script name)")
    if code is not None:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        job.inline_code = code
    else:
        if not isinstance(script, str):
            raise TypeError(f"script must be a str, not {type(script).__name__}")
        job.script_name = script
    if table is None:
        return PreparedJob(job)
    job.has_input_table = True
    return PreparedJob(job, write_table_memfd(table))


def _job_kind(kind: str) -> int:
    try:
        return _KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}") from None


def _params_json(params: Mapping[str, Any] | None) -> str:
    """`params` as strict JSON (no NaN/Infinity); "" (the server reads `{}`) for None."""
    if params is None:
        return ""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping (a JSON object), not {type(params).__name__}")
    return json.dumps(params, allow_nan=False, separators=(",", ":"))


def encode_request(request_id: int, job: api_pb2.Job) -> bytes:
    payload: bytes = api_pb2.Request(id=request_id, job=job).SerializeToString()
    return payload


@dataclass
class Reply:
    """One decoded `Response` frame, with its fd already taken off the connection.

    Exactly one of `outcome` and `protocol_error` is set. Owns `table_fd`:
    hand it on with `to_outcome()` or drop it with `discard()`.
    """

    id: int
    outcome: api_pb2.Outcome | None = None
    table_fd: int | None = None
    protocol_error: str | None = None

    def to_outcome(self) -> Outcome:
        """The typed outcome (reads the table, if any); consumes `table_fd`."""
        if self.outcome is None:
            raise ProtocolError(self.protocol_error or "the supervisor reported a protocol error")
        fd, self.table_fd = self.table_fd, None
        return outcome_from_proto(self.outcome, fd)

    def discard(self) -> None:
        fd, self.table_fd = self.table_fd, None
        if fd is not None:
            os.close(fd)


def decode_reply(payload: bytes, take_fd: Callable[[], int]) -> Reply:
    """Decodes a `Response` frame; `take_fd` hands out the fds that came with the frames.

    Raises `ProtocolError` when the frame cannot be understood; the
    connection is then out of step and must be closed.
    """
    try:
        response = api_pb2.Response.FromString(payload)
    except DecodeError as error:
        raise ProtocolError(f"the supervisor sent a malformed Response: {error}") from error
    match response.WhichOneof("body"):
        case "outcome":
            reply = Reply(response.id, outcome=response.outcome)
            if response.outcome.WhichOneof("kind") == "ok" and response.outcome.ok.has_table:
                try:
                    reply.table_fd = take_fd()
                except _wire.FrameError as error:
                    raise ProtocolError(str(error)) from error
            return reply
        case "protocol_error":
            message = response.protocol_error.message or "(no message)"
            return Reply(response.id, protocol_error=f"the supervisor reported: {message}")
        case _:
            raise ProtocolError("the supervisor sent a Response without a body")
