# expect: killed signal_name=SIGSYS syscall=pivot_root
# must-not: pivot_root(2) to rearrange its root
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(155, b"/tmp", b"/tmp")  # SYS_pivot_root
    return {"returned": result, "errno": ctypes.get_errno()}
