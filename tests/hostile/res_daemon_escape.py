# expect: ok value={"daemon": "started"}
# must-not: leave a process running after the job ends (double fork, new session, every catchable signal ignored; named hx-daemon, which the runner looks for)
import ctypes
import os
import signal
import time


def main():
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for number in range(1, signal.NSIG):
                try:
                    signal.signal(number, signal.SIG_IGN)
                except (OSError, ValueError):
                    pass
            ctypes.CDLL(None).prctl(15, b"hx-daemon", 0, 0, 0)
            os.write(write_end, b"up")
            time.sleep(120)
            os._exit(0)
        os._exit(0)
    os.wait()
    return {"daemon": "started" if os.read(read_end, 2) == b"up" else "failed"}
