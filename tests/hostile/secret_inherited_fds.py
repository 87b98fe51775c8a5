# expect: ok value={"0": "/dev/null", "1": "pipe", "2": "pipe", "others": ["socket"], "directories": [], "channel_peer_pid": 0}
# must-not: inherit any file descriptor beyond stdin, stdout, stderr and its own worker channel (no host directory, file, socket or the supervisor's listener)
import os
import socket
import stat
import struct


def describe(fd):
    mode = os.fstat(fd).st_mode
    target = os.readlink(f"/proc/self/fd/{fd}")
    if stat.S_ISFIFO(mode):
        return "pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory " + target
    return target


def main():
    found = {}
    for fd in range(4096):  # far beyond RLIMIT_NOFILE (256)
        try:
            os.fstat(fd)
        except OSError:
            continue
        found[fd] = describe(fd)
    result = {str(fd): found.pop(fd, "closed") for fd in (0, 1, 2)}
    result["others"] = sorted(found.values())
    result["directories"] = sorted(d for d in found.values() if d.startswith("directory"))
    sockets = [fd for fd, kind in found.items() if kind == "socket"]
    peer = socket.socket(fileno=os.dup(sockets[0])) if sockets else None
    if peer is not None:
        credentials = peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        result["channel_peer_pid"] = struct.unpack("3i", credentials)[0]
    return result
