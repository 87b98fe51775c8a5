# expect: ok stderr_truncated=true stderr_bytes=65536 stdout_truncated=false value="done"
# must-not: return more than max_captured_output_bytes (64 KiB) of stderr, or block the supervisor with 8 MiB of it
import sys


def main():
    line = "e" * 1023 + "\n"
    for _ in range(8192):
        sys.stderr.write(line)
    return "done"
