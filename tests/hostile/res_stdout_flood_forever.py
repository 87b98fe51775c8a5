# expect: timeout clock=wall limit_ms=1500 stdout_truncated=true stdout_bytes=65536
# limits: wall_timeout_ms=1500
# must-not: make the supervisor buffer unbounded output, or outlive the wall limit while writing
import os


def main():
    block = b"w" * 65536
    while True:
        os.write(1, block)
