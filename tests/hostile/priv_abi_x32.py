# expect: killed signal_name=SIGSYS syscall=x32:mount
# must-not: make a syscall through the x32 ABI (number | 0x40000000), which an x86-64 allowlist keyed on plain numbers could miss; here mount
import ctypes

X32_SYSCALL_BIT, SYS_MOUNT = 0x40000000, 165


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(X32_SYSCALL_BIT | SYS_MOUNT, b"none", b"/tmp", b"tmpfs", 0, None)
    return {"returned": result, "errno": ctypes.get_errno()}
