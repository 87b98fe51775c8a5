# expect: ok value={"socket": ["OSError", "EAFNOSUPPORT"]}
# must-not: connect to the runner's TCP listener on ::1 port {{TCP6_PORT}} (the runner checks that nothing arrived)
import errno
import socket


def main():
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as error:
        return {"socket": [type(error).__name__, errno.errorcode[error.errno]]}
    sock.settimeout(2)
    try:
        sock.connect(("::1", {{TCP6_PORT}}))
        return {"connect": "connected"}
    except OSError as error:
        return {"connect": [type(error).__name__, errno.errorcode.get(error.errno)]}
