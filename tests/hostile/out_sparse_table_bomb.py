# expect: output_rejected reason~="sparse" stdout~=", allocated 8192\n"
# kind: transform
# must-not: get a sparse output table accepted: 20 MiB long but only 8 KiB allocated, so the job paid for (almost) none of it, and validating it makes the supervisor allocate the 20 MiB in its own memory (outside every job limit; with the default limits up to 4 GiB per job)
# The table is well formed: one string of 20 MiB NUL bytes whose pages are a
# hole in the memfd. The job writes it through a sink that seeks over the big
# buffer (untouched anonymous memory, never faulted in) instead of writing it.
import mmap
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyclave_worker.job as runner

SIZE = 20 << 20


class SparseSink:
    def __init__(self, fd):
        self.fd, self.closed = fd, False

    def write(self, data):
        data = memoryview(data)
        if data.nbytes >= SIZE:
            os.lseek(self.fd, data.nbytes, os.SEEK_CUR)  # leave a hole
        else:
            os.write(self.fd, data)
        return data.nbytes

    def flush(self):
        pass

    def close(self):
        self.closed = True


def write_sparse(frame, fd):
    values = pa.py_buffer(mmap.mmap(-1, SIZE))  # reads as zeros, never touched
    offsets = pa.py_buffer(np.array([0, SIZE], dtype=np.int32))
    table = pa.table({"s": pa.Array.from_buffers(pa.string(), 1, [None, offsets, values])})
    with pa.ipc.new_file(SparseSink(fd), table.schema) as writer:
        writer.write_table(table)
    stat = os.fstat(fd)
    print(f"size {stat.st_size}, allocated {stat.st_blocks * 512}", flush=True)


def transform(table, params):
    runner._write_output = write_sparse
    return pd.DataFrame({"x": [1]})
