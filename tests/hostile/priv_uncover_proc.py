# expect: killed signal_name=SIGSYS syscall=umount2
# must-not: unmount the job's /proc to reach the zygote's below it (in root mode, a /proc of the host's pid namespace)
import ctypes

MNT_DETACH = 2


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.umount2(b"/proc", MNT_DETACH)
    with open("/proc/1/cmdline", "rb") as cmdline:
        first = cmdline.read()
    return {"returned": result, "errno": ctypes.get_errno(), "pid_1": first.decode(errors="replace")}
