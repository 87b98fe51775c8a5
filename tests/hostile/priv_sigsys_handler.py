# expect: killed signal_name=SIGSYS syscall=ptrace
# must-not: survive a refused syscall by catching SIGSYS itself (a Python handler replaces the worker's reporter) and carry on probing the policy
import ctypes
import signal

caught = []


def main():
    signal.signal(signal.SIGSYS, lambda number, frame: caught.append(number))
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
    return {"ptrace returned": result, "sigsys caught": len(caught)}
