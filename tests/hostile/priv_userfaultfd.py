# expect: killed signal_name=SIGSYS syscall=userfaultfd
# must-not: get a userfaultfd (used to stall the kernel in exploit races)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(323, 0)
    return {"returned": result, "errno": ctypes.get_errno()}
