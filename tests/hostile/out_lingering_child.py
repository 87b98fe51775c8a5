# expect: ok rows=3 columns=x stdout=""
# kind: transform
# must-not: change the output (or print) after the result is sent: a child forked in transform() wakes up 0.5 s later, overwrites the memfd and prints
import os
import time

import pandas as pd


def transform(table, params):
    fd = fd_linking_to("/memfd:pyclave-output")
    if os.fork() == 0:
        time.sleep(0.5)
        os.pwrite(fd, b"GARBAGE!" * 64, 0)
        os.ftruncate(fd, 4096)
        print("the lingering child corrupted the output", flush=True)
        os._exit(0)
    return pd.DataFrame({"x": [1, 2, 3]})
