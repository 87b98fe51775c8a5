# expect: output_rejected reason="the job wrote no output table" stdout="/tmp/out.fifo\n"
# kind: transform
# must-not: make the supervisor read a FIFO instead of its output memfd (or block on one)
import os

import pandas as pd


def transform(table, params):
    fd = fd_linking_to("/memfd:pyclave-output")
    os.mkfifo("/tmp/out.fifo")
    os.dup2(os.open("/tmp/out.fifo", os.O_RDWR), fd)
    print(os.readlink(f"/proc/self/fd/{fd}"))
    return pd.DataFrame({"x": [1, 2, 3]})
