"""The blocking client: one connection, one request at a time, safe to share between threads."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from pyclave import _wire
from pyclave._jobs import (
    DEFAULT_MAX_FRAME_BYTES,
    JobKindName,
    PreparedJob,
    Reply,
    decode_reply,
    encode_request,
    prepare_job,
)
from pyclave._tables import TableLike
from pyclave.errors import ConnectionLost, ProtocolError, PyclaveError
from pyclave.limits import Limits
from pyclave.outcome import Outcome


class Client:
    """A blocking connection to a pyclave supervisor.

    Calls are serialized by a lock, so one `Client` can be shared between
    threads (they take turns); use `pyclave.AsyncClient` for many jobs in
    flight on one connection. If a call is interrupted half-way (e.g. by
    KeyboardInterrupt) the connection is closed, since it may be out of
    step; open a new client.

        with pyclave.Client("/run/pyclave.sock") as client:
            outcome = client.transform(code, df, {"k": 2})
            if outcome.ok:
                print(outcome.table)
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        limits: Limits | None = None,
    ) -> None:
        """Connects to the supervisor listening on `socket_path`.

        `max_frame_bytes` bounds the size of a response frame; `limits` are
        the defaults for every job of this client (per-call limits win).
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(socket_path))
        except BaseException:
            sock.close()
            raise
        self._setup(sock, max_frame_bytes, limits)

    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        limits: Limits | None = None,
    ) -> Client:
        """A client over an already-connected AF_UNIX stream socket (now owned by it).

        A non-blocking socket is switched to blocking mode; a timeout set on
        the socket is kept (a call that times out closes the connection).
        """
        if sock.gettimeout() == 0.0:
            sock.setblocking(True)
        self = cls.__new__(cls)
        self._setup(sock, max_frame_bytes, limits)
        return self

    def _setup(self, sock: socket.socket, max_frame_bytes: int, limits: Limits | None) -> None:
        self._sock = sock
        self._reader = _wire.FrameReader(sock, max_frame_bytes)
        self._limits = limits or Limits()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed: str | None = None
        self._closing = False

    # -- public API -----------------------------------------------------------------------

    def transform(
        self,
        code: str | None = None,
        df: TableLike | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        script: str | None = None,
        memory_limit_bytes: int | None = None,
        wall_timeout_ms: int | None = None,
        cpu_timeout_ms: int | None = None,
    ) -> Outcome:
        """Runs `transform(table, params)` from `code` (or the named `script`) on `df`.

        On success the outcome is `Ok` with `table` set to the returned DataFrame.
        """
        return self.run(
            code, df, params, kind="transform", script=script,
            memory_limit_bytes=memory_limit_bytes, wall_timeout_ms=wall_timeout_ms,
            cpu_timeout_ms=cpu_timeout_ms,
        )  # fmt: skip

    def exec(
        self,
        code: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        script: str | None = None,
        memory_limit_bytes: int | None = None,
        wall_timeout_ms: int | None = None,
        cpu_timeout_ms: int | None = None,
    ) -> Outcome:
        """Runs `main()` or `main(params)` from `code` (or the named `script`).

        On success the outcome is `Ok` with `value` set to the returned value.
        """
        return self.run(
            code, None, params, kind="exec", script=script,
            memory_limit_bytes=memory_limit_bytes, wall_timeout_ms=wall_timeout_ms,
            cpu_timeout_ms=cpu_timeout_ms,
        )  # fmt: skip

    def run(
        self,
        code: str | None = None,
        df: TableLike | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        kind: JobKindName = "auto",
        script: str | None = None,
        memory_limit_bytes: int | None = None,
        wall_timeout_ms: int | None = None,
        cpu_timeout_ms: int | None = None,
    ) -> Outcome:
        """Runs one job. `kind="auto"` transforms when the code defines `transform`, else execs.

        Job failures are outcomes; this raises only for bad arguments,
        `ProtocolError` and `ConnectionLost`.
        """
        job = prepare_job(
            kind=kind,
            code=code,
            script=script,
            table=df,
            params=params,
            limits=self._limits.updated(
                memory_limit_bytes=memory_limit_bytes,
                wall_timeout_ms=wall_timeout_ms,
                cpu_timeout_ms=cpu_timeout_ms,
            ),
        )
        try:
            with self._lock:
                reply = self._round_trip(job)
        finally:
            job.close()
        return reply.to_outcome()  # reading the table needs no lock

    def close(self) -> None:
        """Closes the connection; a call blocked in another thread gets `ConnectionLost`."""
        if self._closed is None:
            # Wakes a thread blocked in recv, without waiting for its lock.
            self._closing = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._close("the client was closed")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals (called with the lock held) ---------------------------------------------

    def _round_trip(self, job: PreparedJob) -> Reply:
        if self._closed is not None:
            raise ConnectionLost(self._closed)
        request_id = next(self._ids)
        try:
            _wire.send_frame(self._sock, encode_request(request_id, job.job), job.fds)
            job.close()
            reply = self._read_reply()
        except PyclaveError as error:
            self._close(f"the connection was closed: {error}")
            raise
        except OSError as error:
            self._close(f"the connection broke: {error}")
            raise ConnectionLost(f"the connection broke: {error}") from error
        except BaseException:  # interrupted half-way: the stream may be out of step
            self._close("the connection was closed after an interrupted call")
            raise
        if reply.id != request_id:
            reply.discard()
            self._close("the connection was closed after a protocol error")
            raise ProtocolError(f"expected the response to request {request_id}, got {reply.id}")
        return reply

    def _read_reply(self) -> Reply:
        try:
            payload = self._reader.read_frame()
        except _wire.FrameError as error:
            raise ProtocolError(str(error)) from error
        if payload is None:
            if self._closing:
                raise ConnectionLost("the client was closed")
            raise ConnectionLost("the supervisor closed the connection")
        reply = decode_reply(payload, self._reader.take_fd)
        if reply.protocol_error is not None:
            raise ProtocolError(reply.protocol_error)
        return reply

    def _close(self, reason: str) -> None:
        if self._closed is not None:
            return
        self._closed = reason
        self._reader.decoder.close_fds()
        self._sock.close()
