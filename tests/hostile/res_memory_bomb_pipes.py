# expect: out_of_memory limit_bytes=67108864
# limits: memory_limit_bytes=67108864
# must-not: exhaust host kernel memory with pipe buffers (1 MiB each, filled): they must be charged to the job's memory limit
import fcntl
import os

F_SETPIPE_SZ = 1031


def main():
    pipes = []
    chunk = b"p" * 65536
    for _ in range(120):  # 120 MiB of pipe buffers, within RLIMIT_NOFILE
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)
        os.set_blocking(write_end, False)
        try:
            while True:
                os.write(write_end, chunk)
        except BlockingIOError:
            pass
        pipes.append((read_end, write_end))
    return f"filled {len(pipes)} pipes"
