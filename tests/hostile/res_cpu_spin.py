# expect: timeout clock=cpu limit_ms=500
# limits: cpu_timeout_ms=500 wall_timeout_ms=10000
# must-not: use more CPU time than its CPU limit


def main():
    while True:
        pass
