# expect: killed signal_name=SIGSYS syscall=open_by_handle_at
# must-not: open a file by handle (the shocker escape: handles reach outside the mounted tree)
import ctypes
import os


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    mount_fd = os.open("/", os.O_RDONLY)
    handle = ctypes.create_string_buffer(8 + 8)
    handle[0:4] = (8).to_bytes(4, "little")  # handle_bytes
    handle[4:8] = (1).to_bytes(4, "little")  # handle_type FILEID_INO32_GEN
    handle[8:12] = (2).to_bytes(4, "little")  # inode 2: a root directory
    result = libc.syscall(304, mount_fd, handle, os.O_RDONLY)
    return {"returned": result, "errno": ctypes.get_errno()}
