# expect: killed signal_name=SIGSYS syscall=ptrace stdout="signal(SIGSYS) refused: EPERM\n"
# must-not: survive a refused syscall by catching SIGSYS itself (a handler of its own would replace the worker's reporter) and carry on probing the policy
import ctypes
import errno
import signal


def main():
    try:
        signal.signal(signal.SIGSYS, lambda number, frame: None)
        print("signal(SIGSYS) installed", flush=True)
    except OSError as error:
        print(f"signal(SIGSYS) refused: {errno.errorcode[error.errno]}", flush=True)
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
    return {"ptrace returned": result}
