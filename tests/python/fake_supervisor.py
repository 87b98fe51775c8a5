"""A stand-in for the supervisor on one end of a socketpair, for tests without the real one.

It reads `Request` frames with `_wire.FrameReader`, takes the input-table fd,
and answers with whatever a handler returns, sending an output table as an
Arrow IPC file in a memfd the way the supervisor does.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pyclave import _wire
from pyclave._proto import api_pb2


@dataclass
class Received:
    request: api_pb2.Request
    table: pa.Table | None = None
    #: `F_GET_SEALS` of the input memfd.
    seals: int | None = None


@dataclass
class Answer:
    """What the fake supervisor sends for one request."""

    response: api_pb2.Response
    table: pa.Table | None = None


Handler = Callable[[Received], Answer]


def simulate(received: Received) -> Answer:
    """A tiny model of the real thing: transform multiplies column `x` by params `k`;
    exec returns `{"echo": params}` and prints a line."""
    request = received.request
    params = json.loads(request.job.params_json or "{}")
    outcome = api_pb2.Outcome(usage=api_pb2.Usage(wall_time_us=7, queue_time_us=1))
    if request.job.kind == api_pb2.JOB_KIND_TRANSFORM:
        table = received.table
        assert table is not None
        doubled = pc.multiply(table.column("x"), params.get("k", 1))
        result = table.set_column(table.schema.get_field_index("x"), "x", doubled)
        outcome.ok.has_table = True
        return Answer(api_pb2.Response(id=request.id, outcome=outcome), result)
    outcome.ok.json = json.dumps({"echo": params})
    outcome.stdout.data = f"job {request.id}\n".encode()
    return Answer(api_pb2.Response(id=request.id, outcome=outcome))


def read_input_table(fd: int) -> pa.Table:
    """Reads an input table the way the worker does (mmap, read in place), then copies it."""
    with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mapped:
        buffer = pa.py_buffer(mapped)
        table = pa.ipc.open_file(buffer).read_all()
        # Copy out of the mapping so it can be closed.
        copied = pa.Table.from_pylist(table.to_pylist(), schema=table.schema)
        del table, buffer
    return copied


def table_memfd(table: pa.Table) -> int:
    """An Arrow IPC file in a sealed memfd, like the supervisor's output tables."""
    fd = os.memfd_create("fake-output", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(fd, "wb", closefd=False) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    fcntl.fcntl(
        fd,
        fcntl.F_ADD_SEALS,
        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
    )
    return fd


def send_answer(sock: socket.socket, answer: Answer) -> None:
    fds = [] if answer.table is None else [table_memfd(answer.table)]
    try:
        _wire.send_frame(sock, answer.response.SerializeToString(), fds)
    finally:
        for fd in fds:
            os.close(fd)


class FakeSupervisor(threading.Thread):
    """Serves one connection in a thread.

    Reads `first_batch` requests before answering any, and answers that
    batch in reverse order when `reverse` is set (to exercise out-of-order
    responses); later requests are answered one by one. Stops at EOF, or
    after `limit` requests.
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler = simulate,
        *,
        first_batch: int = 1,
        reverse: bool = False,
        limit: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.handler = handler
        self.first_batch = first_batch
        self.reverse = reverse
        self.limit = limit
        self.received: list[Received] = []
        #: Request ids in the order they were answered.
        self.answered: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        reader = _wire.FrameReader(self.sock, 64 << 20)
        try:
            size = self.first_batch
            while self.limit is None or len(self.received) < self.limit:
                batch = self._read_batch(reader, size)
                if self.reverse:
                    batch.reverse()
                for received in batch:
                    send_answer(self.sock, self.handler(received))
                    self.answered.append(received.request.id)
                if len(batch) < size:
                    return
                size = 1
        except BaseException as error:
            self.error = error
        finally:
            self.sock.close()

    def _read_batch(self, reader: _wire.FrameReader, size: int) -> list[Received]:
        batch: list[Received] = []
        while len(batch) < size:
            payload = reader.read_frame()
            if payload is None:
                break
            received = Received(api_pb2.Request.FromString(payload))
            if received.request.job.has_input_table:
                fd = reader.take_fd()
                try:
                    received.seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                    received.table = read_input_table(fd)
                finally:
                    os.close(fd)
            self.received.append(received)
            batch.append(received)
        return batch

    def finish(self, timeout: float = 10) -> None:
        """Waits for the thread and re-raises what went wrong in it."""
        self.join(timeout)
        assert not self.is_alive(), "the fake supervisor did not finish"
        if self.error is not None:
            raise self.error


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}
