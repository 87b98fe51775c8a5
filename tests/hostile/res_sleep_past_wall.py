# expect: timeout clock=wall limit_ms=1000
# limits: wall_timeout_ms=1000
# must-not: run past its wall-clock limit by sleeping (no CPU used)
import time


def main():
    time.sleep(60)
    return "woke up"
