# expect: ok value={"packet": ["OSError", "EAFNOSUPPORT"], "inet_raw": ["OSError", "EAFNOSUPPORT"], "inet6_raw": ["OSError", "EAFNOSUPPORT"], "socketpair_inet": ["OSError", "EAFNOSUPPORT"]}
# must-not: open raw or packet sockets (sniffing, spoofing) or a non-Unix socketpair
import errno
import socket


def attempt(make):
    try:
        make()
        return "opened"
    except OSError as error:
        return [type(error).__name__, errno.errorcode[error.errno]]


def main():
    return {
        "packet": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300)),
        "inet_raw": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
        "inet6_raw": attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)),
        "socketpair_inet": attempt(lambda: socket.socketpair(socket.AF_INET, socket.SOCK_STREAM)),
    }
