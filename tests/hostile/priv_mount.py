# expect: killed signal_name=SIGSYS syscall=mount
# must-not: mount a filesystem (here a tmpfs over /tmp)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
    return {"returned": result, "errno": ctypes.get_errno()}
