# expect: out_of_memory limit_bytes=134217728
# limits: memory_limit_bytes=134217728
# must-not: escape the memory limit through memfds (shared memory is charged to the job's cgroup too)
import os


def main():
    chunk = b"m" * (1 << 20)
    files = []
    for index in range(200):  # up to 200 x 16 MiB, far beyond the limit
        fd = os.memfd_create(f"bomb{index}")
        for _ in range(16):
            os.write(fd, chunk)
        files.append(fd)
    return len(files)
