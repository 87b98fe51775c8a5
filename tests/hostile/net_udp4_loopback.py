# expect: ok value={"socket": ["OSError", "EAFNOSUPPORT"]}
# must-not: send a datagram to the runner's UDP socket on 127.0.0.1 port {{UDP4_PORT}} (the runner checks that nothing arrived)
import errno
import socket


def main():
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as error:
        return {"socket": [type(error).__name__, errno.errorcode[error.errno]]}
    try:
        sent = sock.sendto(b"hostile datagram", ("127.0.0.1", {{UDP4_PORT}}))
        return {"sendto": sent}
    except OSError as error:
        return {"sendto": [type(error).__name__, errno.errorcode.get(error.errno)]}
