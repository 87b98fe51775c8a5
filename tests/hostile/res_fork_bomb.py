# expect: ok value={"error": ["BlockingIOError", "EAGAIN"], "forked": 63}
# must-not: start more than max_processes (64) processes: the job itself plus 63 children is the ceiling
# A fork bomb, bounded so that a broken limit ends the test rather than the host:
# it forks until fork fails, at most 500 times; the children just wait.
import errno
import os
import time


def main():
    forked = 0
    for _ in range(500):
        try:
            pid = os.fork()
        except OSError as error:
            return {"error": [type(error).__name__, errno.errorcode[error.errno]], "forked": forked}
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        forked += 1
    return {"error": None, "forked": forked}
