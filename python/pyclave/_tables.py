"""Tables in and out: Arrow IPC files in memfds.

Input: a DataFrame (or a `pyarrow.Table`) becomes an Arrow IPC *file* in a
sealed memfd, whose fd travels with the request.

Index rule: a default index (an unnamed `RangeIndex` 0, 1, 2, ...) carries
no data and is dropped. Any other index (named, non-contiguous, a
MultiIndex, ...) is treated as data: it is stored as columns with pandas
metadata, so the job's `table` gets the same index back (the worker restores
it with `to_pandas()`). Call `df.reset_index(drop=True)` first to send just
the columns. Output tables are read back the same way: an index the job's
result carried comes back as the index.

Output: the supervisor hands a read-only fd to a sealed Arrow IPC file. The
file is read into Arrow-owned memory (one `pread`, no mmap) and converted to
pandas. Reading straight from an mmap would look cheaper, but pandas 3 keeps
string columns as Arrow arrays that point into the source buffers: the
mapping (and, on Python 3.11, a dup of the fd that `mmap` keeps) would have to
stay alive as long as the DataFrame. Arrow-owned memory is freed with the
DataFrame and holds no fd.
"""

from __future__ import annotations

import fcntl
import os
from typing import TypeAlias

import pandas as pd
import pyarrow as pa

from pyclave.errors import ProtocolError

TableLike: TypeAlias = pd.DataFrame | pa.Table

_INPUT_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def to_arrow(table: TableLike) -> pa.Table:
    """The Arrow table to send for `table` (see the module's index rule)."""
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=not has_default_index(table))
    raise TypeError(
        f"a table must be a pandas.DataFrame or a pyarrow.Table, not {type(table).__name__}"
    )


def has_default_index(frame: pd.DataFrame) -> bool:
    """True when the index is the unnamed 0..n-1 `RangeIndex` (so it carries no data)."""
    index = frame.index
    return (
        isinstance(index, pd.RangeIndex)
        and index.name is None
        and index.start == 0
        and index.step == 1
    )


def write_table_memfd(table: TableLike) -> int:
    """Writes `table` as an Arrow IPC file into a new sealed memfd; the caller owns the fd.

    The memfd is close-on-exec and sealed against writing, growing and
    shrinking (further seals may still be added by the receiver).
    """
    arrow = to_arrow(table)
    fd = os.memfd_create("pyclave-input", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with (
            open(fd, "wb", closefd=False) as sink,
            pa.ipc.new_file(sink, arrow.schema) as writer,
        ):
            writer.write_table(arrow)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _INPUT_SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_table_fd(fd: int) -> pd.DataFrame:
    """Reads the Arrow IPC file behind `fd` into a DataFrame; `fd` stays open."""
    return read_arrow_fd(fd).to_pandas()


def read_arrow_fd(fd: int) -> pa.Table:
    """Reads the Arrow IPC file behind `fd` into Arrow-owned memory; `fd` stays open."""
    size = os.fstat(fd).st_size
    buffer = pa.allocate_buffer(size)
    with memoryview(buffer) as view:
        done = 0
        while done < size:
            count = os.preadv(fd, [view[done:]], done)
            if count == 0:
                raise ProtocolError(f"the output table file ended after {done} of {size} bytes")
            done += count
    try:
        return pa.ipc.open_file(buffer).read_all()
    except pa.ArrowException as error:
        raise ProtocolError(
            f"the output table is not a readable Arrow IPC file: {error}"
        ) from error
