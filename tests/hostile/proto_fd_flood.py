# expect: output_rejected reason="the worker broke the protocol: 8 file descriptors arrived from a peer that may send none"
# must-not: fill the supervisor's descriptor table by sending it file descriptors (800 of them, 8 per message) on the worker channel
import array
import os
import socket


def channel():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                return socket.socket(fileno=int(name))
        except OSError:
            pass
    raise RuntimeError("no channel socket")


def main():
    sock = channel()
    fds = array.array("i", [os.open("/dev/null", os.O_RDONLY) for _ in range(8)])
    for _ in range(100):
        sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    return "sent 800 descriptors"
