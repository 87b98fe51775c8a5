# expect: ok stdout_truncated=true stdout_bytes=65536 stderr_truncated=false value="done"
# must-not: return more than max_captured_output_bytes (64 KiB) of stdout, or block the supervisor with 8 MiB of it
import sys


def main():
    line = "o" * 1023 + "\n"
    for _ in range(8192):
        sys.stdout.write(line)
    return "done"
