# expect: output_rejected reason="invalid record batch 0: Invalid argument error: Need at least 160000 bytes in buffers[0] in array of type Int64, but got 98760"
# kind: transform
# must-not: get an output table accepted whose record batch claims 20000 rows while its buffers hold 12345
# The job replaces the worker's table writer (it runs in the same process) to
# write a hand-made file: valid Arrow, with both row counts patched.
import io
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyclave_worker.job as runner

ROWS, CLAIMED = 12345, 20000


def crafted():
    table = pa.table({"x": np.zeros(ROWS, dtype=np.int64)})
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    old = ROWS.to_bytes(8, "little")
    if data.count(old) != 2:  # RecordBatch.length and the column's FieldNode.length
        raise RuntimeError(f"expected 2 row counts in the file, found {data.count(old)}")
    return data.replace(old, CLAIMED.to_bytes(8, "little"))


def write_crafted(frame, fd):
    os.write(fd, crafted())
    os.close(fd)


def transform(table, params):
    runner._write_output = write_crafted
    return pd.DataFrame({"x": [1]})
