# expect: killed signal_name=SIGSYS syscall=ptrace stdout="seccomp(SET_MODE_FILTER, allow-all) returned 0\n"
# must-not: undo the seccomp policy by stacking an allow-everything filter of its own (stacked filters can only restrict: ptrace must still be refused)
import ctypes

SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_RET_ALLOW = 317, 1, 0x7FFF0000
BPF_RET_K = 0x06


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    program = (SockFilter * 1)(SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    fprog = SockFprog(1, program)
    installed = libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(fprog))
    print(f"seccomp(SET_MODE_FILTER, allow-all) returned {installed}", flush=True)
    result = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
    return {"ptrace returned": result, "errno": ctypes.get_errno()}
