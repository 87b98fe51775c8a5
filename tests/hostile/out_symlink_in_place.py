# expect: user_error type=OSError message="[Errno 9] Bad file descriptor" stdout="/tmp/out.link\n"
# kind: transform
# must-not: make the supervisor follow a symlink (here to /proc/self/fd/0) as its output; the job's own write fails
import os

import pandas as pd


def transform(table, params):
    fd = fd_linking_to("/memfd:pyclave-output")
    os.symlink("/proc/self/fd/0", "/tmp/out.link")
    os.dup2(os.open("/tmp/out.link", os.O_PATH | os.O_NOFOLLOW), fd)
    print(os.readlink(f"/proc/self/fd/{fd}"))
    return pd.DataFrame({"x": [1, 2, 3]})
