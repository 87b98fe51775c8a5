# expect: output_rejected reason~="bytes, over the limit of 25165824 bytes"
# kind: transform
# must-not: hand the caller an output table larger than max_table_bytes (24 MiB)
import numpy as np
import pandas as pd


def transform(table, params):
    rows = 900_000  # 4 x 900k int64 = 28.8 MB: under the 32 MiB file-size limit, over max_table_bytes
    return pd.DataFrame({f"c{i}": np.arange(rows, dtype=np.int64) for i in range(4)})
