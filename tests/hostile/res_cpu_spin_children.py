# expect: timeout clock=cpu limit_ms=800
# limits: cpu_timeout_ms=800 wall_timeout_ms=10000
# must-not: escape the CPU limit by spreading the spinning over child processes (the limit counts the whole job)
import os
import time


def main():
    for _ in range(3):
        if os.fork() == 0:
            while True:
                pass
    time.sleep(60)
