# expect: ok value={"socket": ["OSError", "EAFNOSUPPORT"]}
# must-not: open an AF_VSOCK socket (a path to the hypervisor host, outside any network namespace)
import errno
import socket


def main():
    try:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    except OSError as error:
        return {"socket": [type(error).__name__, errno.errorcode[error.errno]]}
    sock.settimeout(1)
    try:
        sock.connect((2, 9))  # the host (CID 2); only reached if the socket exists at all
        return {"connect": "connected"}
    except OSError as error:
        return {"connect": [type(error).__name__, errno.errorcode.get(error.errno)]}
