# expect: killed signal_name=SIGSYS syscall=chroot
# must-not: chroot(2) (the classic first step of a chroot escape)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.chroot(b"/tmp")
    return {"returned": result, "errno": ctypes.get_errno()}
