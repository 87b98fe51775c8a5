# expect: killed signal_name=SIGSYS syscall=bpf
# must-not: load or query eBPF programs or maps (bpf(2))
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(128)
    result = libc.syscall(321, 0, attr, 128)  # BPF_MAP_CREATE
    return {"returned": result, "errno": ctypes.get_errno()}
