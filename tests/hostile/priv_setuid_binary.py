# expect: ok value={"exit": 0, "ids": ["job", "job", "job", "job", "job", "job"]}
# must-not: gain root (or any other id) by running a setuid+setgid root binary; the runner built one ({{SETUID_PROBE}}, it prints its real/effective/saved uids and gids) and bound it into every job
import os
import subprocess


def main():
    probe = subprocess.run(["{{SETUID_PROBE}}"], capture_output=True, text=True, timeout=20)
    ids = [int(value) for value in probe.stdout.split()]
    own = [os.getuid()] * 3 + [os.getgid()] * 3
    return {"exit": probe.returncode, "ids": ["job" if got == mine else got for got, mine in zip(ids, own)]}
