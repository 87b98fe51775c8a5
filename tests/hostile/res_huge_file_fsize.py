# expect: ok value={"error": "EFBIG", "written_mib": 32}
# must-not: write a file larger than max_file_size_bytes (32 MiB, RLIMIT_FSIZE); a memfd is used because /tmp is smaller
# The job is pid 1 of its pid namespace, so the SIGXFSZ that comes with EFBIG
# is ignored even with the default action (see res_huge_file_fsize_child.py).
import errno
import os
import signal


def main():
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    fd = os.memfd_create("huge")
    chunk = b"f" * (1 << 20)
    written = 0
    try:
        for _ in range(64):
            written += os.write(fd, chunk)
    except OSError as error:
        return {"error": errno.errorcode[error.errno], "written_mib": written >> 20}
    return {"error": None, "written_mib": written >> 20}
