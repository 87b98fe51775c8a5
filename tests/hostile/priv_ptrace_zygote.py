# expect: killed signal_name=SIGSYS syscall=ptrace
# must-not: ptrace-attach to its parent, the zygote (host pid {{ZYGOTE_PID}}), which forks every worker
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.ptrace(16, {{ZYGOTE_PID}}, None, None)  # PTRACE_ATTACH
    return {"returned": result, "errno": ctypes.get_errno()}
