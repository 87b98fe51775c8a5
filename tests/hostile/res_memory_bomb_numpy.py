# expect: out_of_memory limit_bytes=134217728
# limits: memory_limit_bytes=134217728
# must-not: use more than its memory limit, or end as a Python MemoryError instead of a cgroup OOM kill
import numpy as np


def main():
    blocks = [np.ones(2 * 1024 * 1024) for _ in range(100)]  # 16 MiB each, touched
    return len(blocks)
