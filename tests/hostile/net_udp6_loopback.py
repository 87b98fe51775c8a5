# expect: ok value={"socket": ["OSError", "EAFNOSUPPORT"]}
# must-not: send a datagram to the runner's UDP socket on ::1 port {{UDP6_PORT}} (the runner checks that nothing arrived)
import errno
import socket


def main():
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError as error:
        return {"socket": [type(error).__name__, errno.errorcode[error.errno]]}
    try:
        sent = sock.sendto(b"hostile datagram", ("::1", {{UDP6_PORT}}))
        return {"sendto": sent}
    except OSError as error:
        return {"sendto": [type(error).__name__, errno.errorcode.get(error.errno)]}
