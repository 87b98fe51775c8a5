# expect: ok value={"supervisor": {"kill": "ESRCH", "pidfd_open": "ESRCH", "rt_sigqueueinfo": "ESRCH"}, "zygote": {"kill": "ESRCH", "pidfd_open": "ESRCH", "rt_sigqueueinfo": "ESRCH"}}
# must-not: signal the supervisor (host pid {{SUPERVISOR_PID}}) or the zygote (host pid {{ZYGOTE_PID}}): they are outside the job's pid namespace
import ctypes
import errno
import os
import signal


def attempt(call):
    try:
        call()
        return "delivered"
    except OSError as error:
        return errno.errorcode[error.errno]


def sigqueue(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    info = ctypes.create_string_buffer(128)
    info[0:4] = int(signal.SIGKILL).to_bytes(4, "little")
    info[8:12] = (-1 & 0xFFFFFFFF).to_bytes(4, "little")  # si_code SI_QUEUE
    if libc.syscall(129, pid, int(signal.SIGKILL), info) != 0:  # SYS_rt_sigqueueinfo
        raise OSError(ctypes.get_errno(), "rt_sigqueueinfo")


def main():
    result = {}
    for who, pid in (("supervisor", {{SUPERVISOR_PID}}), ("zygote", {{ZYGOTE_PID}})):
        result[who] = {
            "kill": attempt(lambda: os.kill(pid, signal.SIGKILL)),
            "pidfd_open": attempt(lambda: os.pidfd_open(pid)),
            "rt_sigqueueinfo": attempt(lambda: sigqueue(pid)),
        }
    return result
