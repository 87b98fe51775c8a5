# expect: ok rows=3 columns=x stdout=""
# kind: transform
# must-not: change the output after the result is sent through a shared writable mapping: transform() maps the still empty output memfd (such a mapping keeps it from being sealed), forks a child that keeps the mapping, and 0.5 s later the child writes through it and prints
import ctypes
import mmap
import os
import time

import pandas as pd

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]


def transform(table, params):
    fd = fd_linking_to("/memfd:pyclave-output")
    # Past the end of the empty file: the table written after transform()
    # returns lands under this mapping.
    address = libc.mmap(None, 1 << 20, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "cannot map the output memfd")
    if os.fork() == 0:
        time.sleep(0.5)
        ctypes.memset(address, 0x47, 64)
        print("the lingering child wrote through its mapping of the output", flush=True)
        os._exit(0)
    return pd.DataFrame({"x": [1, 2, 3]})
