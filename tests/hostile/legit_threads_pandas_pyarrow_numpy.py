# expect: ok value={"rows": 2000000, "b_sum": 3999998000000, "pool_sums": 747932000, "groups": 7, "matmul": 300.0, "cpu_count": 4, "arrow_threads": true, "pool_threads_ran": true}
# must-not: break the threads pandas, numpy and pyarrow legitimately start (Arrow's CPU and I/O pools, a ThreadPoolExecutor, threaded conversions)
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def main():
    pa.set_cpu_count(4)
    pa.set_io_thread_count(4)
    rows = 2_000_000
    numbers = pa.array(np.arange(rows, dtype=np.int64))
    table = pa.table({"a": numbers, "b": pc.multiply(numbers, 2), "s": pa.array([str(i % 7) for i in range(rows)])})
    frame = table.to_pandas(use_threads=True)
    back = pa.Table.from_pandas(frame, nthreads=4)
    arrow_threads = len(os.listdir("/proc/self/task")) > 1  # Arrow's pools stay up once started
    seen = set()

    def work(k):
        seen.add(threading.get_ident())
        return int(np.arange(k * 1000, dtype=np.int64).sum())

    with ThreadPoolExecutor(max_workers=8) as pool:
        sums = list(pool.map(work, range(1, 17)))
    grouped = frame.groupby("s")["b"].sum()
    matrix = np.ones((300, 300)) @ np.ones((300, 300))
    return {
        "rows": back.num_rows,
        "b_sum": pc.sum(back["b"]).as_py(),
        "pool_sums": sum(sums),
        "groups": len(grouped),
        "matmul": float(matrix[0, 0]),
        "cpu_count": pa.cpu_count(),
        "arrow_threads": arrow_threads,
        "pool_threads_ran": bool(seen) and threading.get_ident() not in seen,
    }
