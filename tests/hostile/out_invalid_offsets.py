# expect: output_rejected reason="invalid record batch 0: Invalid argument error: Last offset 1000000 of Utf8 is larger than values length 6"
# kind: transform
# must-not: get an output table accepted whose string offsets point past its data (the caller would read out of bounds)
import io
import os
import struct

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyclave_worker.job as runner


def crafted():
    table = pa.table({"s": pa.array(["aa", "bb", "cc"], pa.string())})
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    offsets = struct.pack("<4i", 0, 2, 4, 6)
    if data.count(offsets) != 1:
        raise RuntimeError("the offsets buffer is not in the file exactly once")
    return data.replace(offsets, struct.pack("<4i", 0, 2, 4, 1_000_000))


def write_crafted(frame, fd):
    os.write(fd, crafted())
    os.close(fd)


def transform(table, params):
    runner._write_output = write_crafted
    return pd.DataFrame({"x": [1]})
