# expect: output_rejected reason="table has 1000000000000 rows, over the limit of 1000000"
# kind: transform
# must-not: get a tiny file accepted that expands to 10^12 rows when read (a null column has no buffers to contradict it)
import io
import os

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyclave_worker.job as runner

ROWS, CLAIMED = 12345, 10**12


def crafted():
    table = pa.table({"n": pa.nulls(ROWS)})
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    old = ROWS.to_bytes(8, "little")
    if data.count(old) != 3:  # RecordBatch.length, FieldNode.length and FieldNode.null_count
        raise RuntimeError(f"expected 3 counts in the file, found {data.count(old)}")
    return data.replace(old, CLAIMED.to_bytes(8, "little"))


def write_crafted(frame, fd):
    os.write(fd, crafted())
    os.close(fd)


def transform(table, params):
    runner._write_output = write_crafted
    return pd.DataFrame({"x": [1]})
