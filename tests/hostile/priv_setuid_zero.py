# expect: ok value={"setuid(0)": "EPERM", "setgid(0)": "EPERM", "setresuid(0,0,0)": "EPERM", "setgroups([0])": "EPERM", "setreuid(0,0)": "EPERM", "capset(all)": "EPERM", "uid_after": "unchanged"}
# must-not: become uid or gid 0 (or gain capabilities) in any way the identity syscalls offer
import ctypes
import errno
import os


def attempt(call):
    try:
        call()
        return "succeeded"
    except OSError as error:
        return errno.errorcode[error.errno]


def capset_all():
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def main():
    uid = os.getuid()
    result = {
        "setuid(0)": attempt(lambda: os.setuid(0)),
        "setgid(0)": attempt(lambda: os.setgid(0)),
        "setresuid(0,0,0)": attempt(lambda: os.setresuid(0, 0, 0)),
        "setgroups([0])": attempt(lambda: os.setgroups([0])),
        "setreuid(0,0)": attempt(lambda: os.setreuid(0, 0)),
        "capset(all)": attempt(capset_all),
    }
    result["uid_after"] = "unchanged" if os.getresuid() == (uid, uid, uid) else str(os.getresuid())
    return result
