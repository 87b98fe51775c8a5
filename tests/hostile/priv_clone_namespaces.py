# expect: ok value={"CLONE_NEWUSER": "EPERM", "CLONE_NEWNS": "EPERM", "CLONE_NEWPID": "EPERM", "CLONE_NEWNET": "EPERM", "CLONE_NEWIPC": "EPERM", "CLONE_NEWUTS": "EPERM", "CLONE_NEWCGROUP": "EPERM", "clone3": "ENOSYS"}
# must-not: create a namespace with clone(2) (a new user namespace would hand out a full capability set) or pass flags through clone3(2), which seccomp cannot inspect
import ctypes
import errno
import os

SYS_CLONE, SYS_CLONE3, SIGCHLD = 56, 435, 17
FLAGS = {"CLONE_NEWUSER": 0x10000000, "CLONE_NEWNS": 0x00020000, "CLONE_NEWPID": 0x20000000,
         "CLONE_NEWNET": 0x40000000, "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUTS": 0x04000000,
         "CLONE_NEWCGROUP": 0x02000000}


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = {}
    for name, flag in FLAGS.items():
        pid = libc.syscall(SYS_CLONE, flag | SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)  # the child of a clone that should have failed
        if pid > 0:
            os.waitpid(pid, 0)
            result[name] = "created"
        else:
            result[name] = errno.errorcode[ctypes.get_errno()]

    class CloneArgs(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint64) for name in
                    ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls")]

    args = CloneArgs(flags=FLAGS["CLONE_NEWUSER"], exit_signal=SIGCHLD)
    pid = libc.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        os._exit(0)
    result["clone3"] = "created" if pid > 0 else errno.errorcode[ctypes.get_errno()]
    return result
