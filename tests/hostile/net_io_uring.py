# expect: killed signal_name=SIGSYS syscall=io_uring_setup
# must-not: get an io_uring (its requests bypass seccomp, e.g. IORING_OP_CONNECT / OP_SOCKET)
import ctypes

SYS_IO_URING_SETUP = 425


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(SYS_IO_URING_SETUP, 8, params)
    return {"io_uring_setup returned": fd, "errno": ctypes.get_errno()}
