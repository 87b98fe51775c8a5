# expect: ok value={"child": "killed by SIGXFSZ"}
# must-not: let a child process write a file larger than max_file_size_bytes (32 MiB)
import os
import signal


def main():
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        fd = os.memfd_create("huge")
        chunk = b"f" * (1 << 20)
        for _ in range(64):
            os.write(fd, chunk)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"child": f"killed by {signal.Signals(os.WTERMSIG(status)).name}"}
    return {"child": f"exited with {os.WEXITSTATUS(status)}"}
