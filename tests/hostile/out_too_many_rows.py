# expect: output_rejected reason="table has 1000001 rows, over the limit of 1000000"
# kind: transform
# must-not: hand the caller more rows than max_rows (1,000,000)
import numpy as np
import pandas as pd


def transform(table, params):
    return pd.DataFrame({"b": np.zeros(1_000_001, dtype=np.int8)})
