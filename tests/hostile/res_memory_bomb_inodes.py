# expect: out_of_memory limit_bytes=67108864
# limits: memory_limit_bytes=67108864
# must-not: exhaust host kernel memory with empty files: they take no tmpfs space, but their inodes and dentries must be charged to the job's memory limit
import os


def main():
    for index in range(1_000_000):
        os.close(os.open(f"/tmp/{index:07d}-" + "x" * 150, os.O_CREAT | os.O_WRONLY, 0o600))
    return "created a million empty files"
