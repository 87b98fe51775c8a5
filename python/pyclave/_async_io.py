"""asyncio counterparts of `_wire.send_frame` for non-blocking sockets."""

from __future__ import annotations

import array
import asyncio
import socket
from collections.abc import Sequence

from pyclave import _wire


async def send_frame(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, payload: bytes, fds: Sequence[int] = ()
) -> None:
    """Sends one frame on a non-blocking socket, with `fds` attached to its first byte.

    Callers must not interleave frames on one socket (hold a lock), and must
    not abandon a frame half-sent: cancel this only by closing the connection.
    """
    data = memoryview(_wire.encode_frame(payload))
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        while True:
            try:
                sent = sock.sendmsg([data], ancillary)
                break
            except (BlockingIOError, InterruptedError):
                await wait_writable(loop, sock)
        data = data[sent:]
    if data:
        await loop.sock_sendall(sock, data)


async def wait_writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _resolve, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
