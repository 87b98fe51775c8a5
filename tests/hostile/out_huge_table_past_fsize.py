# expect: user_error type=OSError message="[Errno 27] File too large"
# kind: transform
# must-not: write an output table past max_file_size_bytes (32 MiB): the worker's own write of the table fails with EFBIG
import numpy as np
import pandas as pd


def transform(table, params):
    rows = 1_000_000  # 5 x 1M int64 = 40 MB
    return pd.DataFrame({f"c{i}": np.arange(rows, dtype=np.int64) for i in range(5)})
