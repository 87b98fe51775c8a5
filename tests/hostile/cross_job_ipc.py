# expect: ok value={"abstract_socket": "ConnectionRefusedError", "sysv_shm": "ENOENT"}
# victim: yes
# must-not: reach another running job through its abstract Unix socket (\0pyclave-victim) or its System V shared memory (key 0x50594356)
import ctypes
import errno
import socket


def main():
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect("\0pyclave-victim")
        abstract = "connected"
    except OSError as error:
        abstract = type(error).__name__
    libc = ctypes.CDLL(None, use_errno=True)
    segment = libc.shmget(0x50594356, 0, 0)
    shm = f"attached segment {segment}" if segment >= 0 else errno.errorcode[ctypes.get_errno()]
    return {"abstract_socket": abstract, "sysv_shm": shm}
