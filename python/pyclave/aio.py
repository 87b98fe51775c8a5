"""The asyncio client: many jobs in flight on one connection."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import socket
from collections.abc import Callable, Coroutine, Generator, Mapping
from types import TracebackType
from typing import Any

from pyclave import _async_io, _wire
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


class AsyncClient:
    """An asyncio connection to a pyclave supervisor.

    Any number of jobs may be in flight at once: requests are written in
    turn, and responses (which may come back in any order) are matched to
    their requests by id as they arrive. Converting tables to and from
    Arrow runs in the loop's default executor, off the event loop.

        async with pyclave.AsyncClient.connect("/run/pyclave.sock") as client:
            outcomes = await asyncio.gather(*(client.transform(code, df) for df in frames))

    Bound to the event loop it was created in; not thread-safe. Cancelling a
    call abandons its job (its outcome is dropped when it arrives) without
    disturbing the other calls.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        limits: Limits | None = None,
    ) -> None:
        """Takes over an already-connected AF_UNIX stream socket; prefer `connect`.

        Must be called from a coroutine running in the loop the client will use.
        """
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._decoder = _wire.FrameDecoder(max_frame_bytes)
        self._limits = limits or Limits()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._send_lock = asyncio.Lock()
        self._closed: tuple[type[PyclaveError], str] | None = None
        self._loop.add_reader(self._fd, self._on_readable)

    @classmethod
    def connect(
        cls,
        socket_path: str | os.PathLike[str],
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        limits: Limits | None = None,
    ) -> _Connecting:
        """Connects to the supervisor at `socket_path`.

        Await the result (`client = await AsyncClient.connect(path)`) or use
        it as an async context manager (`async with AsyncClient.connect(path)
        as client:`), which closes the client on exit.
        """
        return _Connecting(cls._open(socket_path, max_frame_bytes=max_frame_bytes, limits=limits))

    @classmethod
    async def _open(
        cls, socket_path: str | os.PathLike[str], *, max_frame_bytes: int, limits: Limits | None
    ) -> AsyncClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, os.fspath(socket_path))
        except BaseException:
            sock.close()
            raise
        return cls(sock, max_frame_bytes=max_frame_bytes, limits=limits)

    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        limits: Limits | None = None,
    ) -> AsyncClient:
        """A client over an already-connected AF_UNIX stream socket (now owned by it).

        Must be called from a coroutine running in the loop the client will use.
        """
        return cls(sock, max_frame_bytes=max_frame_bytes, limits=limits)

    # -- public API -----------------------------------------------------------------------

    async def transform(
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
        """Runs `transform(table, params)`; see `pyclave.Client.transform`."""
        return await self.run(
            code, df, params, kind="transform", script=script,
            memory_limit_bytes=memory_limit_bytes, wall_timeout_ms=wall_timeout_ms,
            cpu_timeout_ms=cpu_timeout_ms,
        )  # fmt: skip

    async def exec(
        self,
        code: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        script: str | None = None,
        memory_limit_bytes: int | None = None,
        wall_timeout_ms: int | None = None,
        cpu_timeout_ms: int | None = None,
    ) -> Outcome:
        """Runs `main()` or `main(params)`; see `pyclave.Client.exec`."""
        return await self.run(
            code, None, params, kind="exec", script=script,
            memory_limit_bytes=memory_limit_bytes, wall_timeout_ms=wall_timeout_ms,
            cpu_timeout_ms=cpu_timeout_ms,
        )  # fmt: skip

    async def run(
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
        """Runs one job; see `pyclave.Client.run`."""
        self._check_open()
        build = functools.partial(
            prepare_job,
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
        # Writing a table can take a while: do it off the event loop.
        job = build() if df is None else await self._in_thread(build)
        request_id = next(self._ids)
        reply_future: asyncio.Future[Reply] = self._loop.create_future()
        self._pending[request_id] = reply_future
        try:
            # Shielded: a frame must never be abandoned half-written.
            await asyncio.shield(self._loop.create_task(self._send(request_id, job)))
            reply = await reply_future
        except BaseException:
            self._pending.pop(request_id, None)
            _discard(reply_future)
            raise
        if reply.table_fd is None:
            return reply.to_outcome()
        return await self._loop.run_in_executor(None, reply.to_outcome)

    async def close(self) -> None:
        """Closes the connection; calls still waiting get `ConnectionLost`."""
        self._fail(ConnectionLost, "the client was closed")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def pending(self) -> int:
        """How many jobs are waiting for their outcome."""
        return len(self._pending)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- sending ------------------------------------------------------------------------------

    async def _in_thread(self, build: Callable[[], PreparedJob]) -> PreparedJob:
        """Runs `build` in the default executor; closes its job if the caller is cancelled."""
        future = self._loop.run_in_executor(None, build)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_prepared)
            raise

    async def _send(self, request_id: int, job: PreparedJob) -> None:
        """Writes one request frame; owns (and closes) the job's fd."""
        try:
            async with self._send_lock:
                self._check_open()
                payload = encode_request(request_id, job.job)
                try:
                    await _async_io.send_frame(self._loop, self._sock, payload, job.fds)
                except OSError as error:
                    self._fail(ConnectionLost, f"the connection broke: {error}")
                    raise ConnectionLost(f"the connection broke: {error}") from error
                except BaseException:
                    self._fail(ConnectionLost, "a request was interrupted while being written")
                    raise
        finally:
            job.close()
            self._release_socket()

    # -- receiving ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data, fds = _wire.recv_chunk(self._sock)
        except (BlockingIOError, InterruptedError):
            return
        except _wire.FrameError as error:
            self._fail(ProtocolError, str(error))
            return
        except OSError as error:
            self._fail(ConnectionLost, f"the connection broke: {error}")
            return
        if not data:
            self._fail(ConnectionLost, "the supervisor closed the connection")
            return
        self._decoder.feed(data, fds)
        try:
            while self._closed is None:
                payload = self._decoder.next_frame()
                if payload is None:
                    break
                self._dispatch(decode_reply(payload, self._decoder.take_fd))
        except (_wire.FrameError, ProtocolError) as error:
            self._fail(ProtocolError, str(error))

    def _dispatch(self, reply: Reply) -> None:
        if reply.protocol_error is not None:
            self._fail(ProtocolError, reply.protocol_error)
            return
        future = self._pending.pop(reply.id, None)
        if future is None or future.done():  # the caller gave up on this job
            reply.discard()
            return
        future.set_result(reply)

    # -- closing ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ConnectionLost(f"the connection is closed: {self._closed[1]}")

    def _fail(self, kind: type[PyclaveError], message: str) -> None:
        """Closes the connection; every waiting call gets `kind(message)`."""
        if self._closed is not None:
            return
        self._closed = (kind, message)
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(OSError):  # wakes a write in progress; closed once none is
            self._sock.shutdown(socket.SHUT_RDWR)
        self._decoder.close_fds()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(kind(message))
        self._release_socket()

    def _release_socket(self) -> None:
        if self._closed is not None and not self._send_lock.locked():
            self._sock.close()


class _Connecting:
    """What `AsyncClient.connect` returns: awaitable, and an async context manager."""

    def __init__(self, opening: Coroutine[Any, Any, AsyncClient]) -> None:
        self._opening = opening
        self._client: AsyncClient | None = None

    def __await__(self) -> Generator[Any, None, AsyncClient]:
        return self._opening.__await__()

    async def __aenter__(self) -> AsyncClient:
        self._client = await self._opening
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()


def _discard(reply_future: asyncio.Future[Reply]) -> None:
    """Drops whatever reached an abandoned call's future (closing a table fd)."""
    if not reply_future.done():
        reply_future.cancel()
    elif not reply_future.cancelled() and reply_future.exception() is None:
        reply_future.result().discard()


def _close_prepared(future: asyncio.Future[PreparedJob]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()
