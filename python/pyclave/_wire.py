"""Length-prefixed protobuf frames, with file descriptors, over Unix stream sockets.

A frame is a 4-byte big-endian length and one serialized protobuf message.
File descriptors travel as SCM_RIGHTS ancillary data sent with the first byte
of the frame that announces them; the receiver queues them in arrival order
and the decoded message says how many to take.

This one file serves both the client package and the worker runtime: the
supervisor embeds it into the worker it starts, so the two cannot drift.
"""

from __future__ import annotations

import array
import collections
import os
import socket
import struct
from typing import Iterable, Optional

HEADER = struct.Struct(">I")
# Most fds any frame of the pyclave protocols carries.
MAX_FDS_PER_FRAME = 8
_RECV_CHUNK_BYTES = 256 * 1024
# The first read of a frame whose length is not known yet: CPython allocates
# the whole requested size for every recvmsg, and 256 KiB is an mmap (or a
# fresh stretch of heap) and its page faults, where most frames are small.
_FIRST_RECV_BYTES = 4096
_ANCILLARY_BYTES = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * array.array("i").itemsize)


class FrameError(Exception):
    """The peer broke the framing rules; the connection cannot be used any more."""


def encode_frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def send_frame(sock: socket.socket, payload: bytes, fds: Iterable[int] = ()) -> None:
    """Sends one frame on a blocking socket, with `fds` attached to its first byte."""
    data = encode_frame(payload)
    fds = list(fds)
    if fds:
        sent = sock.sendmsg(
            [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        )
        data = data[sent:]
    if data:
        sock.sendall(data)


class FrameDecoder:
    """Splits a byte stream into frames and keeps the fds that came with it.

    Pure bookkeeping: callers read from the socket (blocking or asyncio) and
    hand each chunk and its fds to `feed`.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._fds: collections.deque[int] = collections.deque()

    def feed(self, data: bytes, fds: Iterable[int] = ()) -> None:
        self._buffer += data
        self._fds.extend(fds)

    def next_frame(self) -> Optional[bytes]:
        """The next complete frame's payload, or None until more bytes arrive."""
        if len(self._buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buffer)
        if length > self._max_frame_bytes:
            raise FrameError(
                f"frame of {length} bytes exceeds the limit of {self._max_frame_bytes}"
            )
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size:end])
        del self._buffer[:end]
        return payload

    def bytes_to_read(self) -> int:
        """How much the next read should ask for: the rest of the current
        frame when its length is known, within [_FIRST_RECV_BYTES,
        _RECV_CHUNK_BYTES]."""
        if len(self._buffer) < HEADER.size:
            return _FIRST_RECV_BYTES
        (length,) = HEADER.unpack_from(self._buffer)
        missing = HEADER.size + length - len(self._buffer)
        return min(max(missing, _FIRST_RECV_BYTES), _RECV_CHUNK_BYTES)

    def take_fd(self) -> int:
        """The next fd received, in arrival order; the caller owns it."""
        if not self._fds:
            raise FrameError("a frame announced a file descriptor that did not arrive")
        return self._fds.popleft()

    def close_fds(self) -> None:
        """Closes fds that arrived but were never taken."""
        while self._fds:
            os.close(self._fds.popleft())


def recv_chunk(sock: socket.socket, size: int = _RECV_CHUNK_BYTES) -> tuple[bytes, list[int]]:
    """One recvmsg of up to `size` bytes: bytes (empty at EOF) and the fds
    that came with them."""
    data, ancdata, flags, _ = sock.recvmsg(size, _ANCILLARY_BYTES)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise FrameError("more file descriptors arrived than a frame may carry")
    return data, fds


class FrameReader:
    """Blocking frame reader over a socket."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int) -> None:
        self._sock = sock
        self.decoder = FrameDecoder(max_frame_bytes)

    def read_frame(self) -> Optional[bytes]:
        """The next frame's payload, or None when the peer closed cleanly."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            data, fds = recv_chunk(self._sock, self.decoder.bytes_to_read())
            if not data:
                self.decoder.close_fds()
                return None
            self.decoder.feed(data, fds)

    def take_fd(self) -> int:
        return self.decoder.take_fd()
