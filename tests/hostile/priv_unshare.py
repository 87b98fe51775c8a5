# expect: killed signal_name=SIGSYS syscall=unshare
# must-not: create a user namespace with unshare(2) (and with it a full capability set)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.unshare(0x10000000)  # CLONE_NEWUSER
    return {"returned": result, "errno": ctypes.get_errno()}
