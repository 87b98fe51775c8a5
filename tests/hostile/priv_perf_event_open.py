# expect: killed signal_name=SIGSYS syscall=perf_event_open
# must-not: open a perf event (kernel attack surface, side channels)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(128)
    attr[4:8] = (128).to_bytes(4, "little")  # size
    result = libc.syscall(298, attr, 0, -1, -1, 0)
    return {"returned": result, "errno": ctypes.get_errno()}
