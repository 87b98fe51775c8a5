# expect: ok value={"route": ["OSError", "EAFNOSUPPORT"], "audit": ["OSError", "EAFNOSUPPORT"], "uevent": ["OSError", "EAFNOSUPPORT"]}
# must-not: open AF_NETLINK sockets (routing, audit, kernel uevents: kernel attack surface and host information)
import errno
import socket


def attempt(protocol):
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        return "opened"
    except OSError as error:
        return [type(error).__name__, errno.errorcode[error.errno]]


def main():
    return {"route": attempt(socket.NETLINK_ROUTE), "audit": attempt(9), "uevent": attempt(15)}
