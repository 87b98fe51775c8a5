# expect: output_rejected reason="the worker broke the protocol: frame of 4294967295 bytes exceeds the limit of 17825792 bytes"
# must-not: make the supervisor allocate (or wait for) a 4 GiB frame announced on the worker channel
import os
import struct


def channel_fd():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                return int(name)
        except OSError:
            pass
    raise RuntimeError("no channel socket")


def main():
    os.write(channel_fd(), struct.pack(">I", 0xFFFFFFFF) + b"x" * 64)
    os._exit(0)
