# expect: ok rows=3 columns=x stdout=""
# kind: transform
# must-not: change the output (or print) after the result is sent: a child forked in transform() wakes up 0.5 s later, overwrites the memfd and prints
import os
import time

import pandas as pd


def output_fd():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:pyclave-output"):
                return int(name)
        except OSError:
            pass
    raise RuntimeError("no output memfd")


def transform(table, params):
    fd = output_fd()
    if os.fork() == 0:
        time.sleep(0.5)
        os.pwrite(fd, b"GARBAGE!" * 64, 0)
        os.ftruncate(fd, 4096)
        print("the lingering child corrupted the output", flush=True)
        os._exit(0)
    return pd.DataFrame({"x": [1, 2, 3]})
