# expect: user_error type=OSError message="[Errno 9] Bad file descriptor" stdout="/tmp/out.link\n"
# kind: transform
# must-not: make the supervisor follow a symlink (here to /proc/self/fd/0) as its output; the job's own write fails
import os

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
    os.symlink("/proc/self/fd/0", "/tmp/out.link")
    os.dup2(os.open("/tmp/out.link", os.O_PATH | os.O_NOFOLLOW), fd)
    print(os.readlink(f"/proc/self/fd/{fd}"))
    return pd.DataFrame({"x": [1, 2, 3]})
