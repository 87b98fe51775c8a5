# expect: output_rejected reason="the worker broke the protocol: frame of 4294967295 bytes exceeds the limit of 17825792 bytes"
# must-not: make the supervisor allocate (or wait for) a 4 GiB frame announced on the worker channel
import os
import struct


def main():
    os.write(fd_linking_to("socket:"), struct.pack(">I", 0xFFFFFFFF) + b"x" * 64)
    os._exit(0)
