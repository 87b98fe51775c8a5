# expect: killed signal_name=SIGSYS syscall=process_vm_readv
# must-not: read another process's memory with process_vm_readv (here: the supervisor, host pid {{SUPERVISOR_PID}})
import ctypes


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(4096)
    local = IoVec(ctypes.cast(buffer, ctypes.c_void_p), 4096)
    remote = IoVec(0x400000, 4096)
    result = libc.process_vm_readv({{SUPERVISOR_PID}}, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return {"returned": result, "errno": ctypes.get_errno()}
