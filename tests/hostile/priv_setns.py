# expect: killed signal_name=SIGSYS syscall=setns
# must-not: join a namespace with setns(2) (tried with its own user namespace: every setns must die, whatever the target)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/proc/self/ns/user", os.O_RDONLY)
    result = libc.setns(fd, 0)
    return {"returned": result, "errno": ctypes.get_errno()}
