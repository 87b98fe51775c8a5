# expect: output_rejected reason="record batch 0 is compressed; compressed ipc bodies are not supported"
# kind: transform
# must-not: get a zstd-compressed table accepted that is tiny on disk and 64 MB when decompressed
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyclave_worker.job as runner


def write_compressed(frame, fd):
    table = pa.table({"z": np.zeros(8_000_000)})
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with os.fdopen(fd, "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)


def transform(table, params):
    runner._write_output = write_compressed
    return pd.DataFrame({"x": [1]})
