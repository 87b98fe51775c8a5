# expect: ok value={"block /tmp/sda": "EPERM", "char /tmp/mem": "EPERM", "fifo /tmp/fifo": "created"}
# must-not: create a device node (a raw disk, /dev/mem) it could open; a FIFO is allowed and proves mknod itself runs
import errno
import os
import stat


def attempt(path, mode, device=0):
    try:
        os.mknod(path, mode, device)
        return "created"
    except OSError as error:
        return errno.errorcode[error.errno]


def main():
    return {
        "block /tmp/sda": attempt("/tmp/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0)),
        "char /tmp/mem": attempt("/tmp/mem", stat.S_IFCHR | 0o600, os.makedev(1, 1)),
        "fifo /tmp/fifo": attempt("/tmp/fifo", stat.S_IFIFO | 0o600),
    }
