# expect: output_rejected reason="the job wrote no output table" stdout="/dev/zero\n"
# kind: transform
# must-not: make the supervisor read a device (/dev/zero, endless) instead of its output memfd
import os

import pandas as pd


def transform(table, params):
    fd = fd_linking_to("/memfd:pyclave-output")
    os.dup2(os.open("/dev/zero", os.O_RDWR), fd)
    print(os.readlink(f"/proc/self/fd/{fd}"))
    return pd.DataFrame({"x": [1, 2, 3]})
