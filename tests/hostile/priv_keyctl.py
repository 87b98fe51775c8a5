# expect: killed signal_name=SIGSYS syscall=keyctl
# must-not: use the kernel keyring (keyctl: join or read the session keyring shared with other processes)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(250, 1, ctypes.c_char_p(None))  # KEYCTL_JOIN_SESSION_KEYRING
    return {"returned": result, "errno": ctypes.get_errno()}
