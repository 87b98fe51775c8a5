# expect: ok value={"PR_SET_NO_NEW_PRIVS 0": "EINVAL", "PR_SET_SECUREBITS 0": "EPERM", "PR_CAP_AMBIENT_RAISE CAP_SYS_ADMIN": "EPERM", "PR_SET_KEEPCAPS 1": "EPERM", "PR_SET_MM start_brk": "EPERM", "PR_CAPBSET_READ CAP_SYS_ADMIN": 0, "PR_GET_NO_NEW_PRIVS": 1}
# must-not: lift a restriction with prctl(2): clear no_new_privs or the locked securebits, raise an ambient capability, keep capabilities, rewrite its memory map layout
import ctypes
import errno


def main():
    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option, *args):
        values = [ctypes.c_ulong(value) for value in (option, *args, 0, 0, 0, 0)[:5]]
        result = libc.prctl(*values)
        return errno.errorcode[ctypes.get_errno()] if result < 0 else result

    return {
        "PR_SET_NO_NEW_PRIVS 0": prctl(38, 0),
        "PR_SET_SECUREBITS 0": prctl(28, 0),
        "PR_CAP_AMBIENT_RAISE CAP_SYS_ADMIN": prctl(47, 2, 21),
        "PR_SET_KEEPCAPS 1": prctl(8, 1),
        "PR_SET_MM start_brk": prctl(35, 6, 0),
        "PR_CAPBSET_READ CAP_SYS_ADMIN": prctl(23, 21),
        "PR_GET_NO_NEW_PRIVS": prctl(39),
    }
