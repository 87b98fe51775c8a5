# expect: ok value={"found": [], "tmp_entries": []}
# must-not: find anything persist_1_plant.py planted: files in /tmp, /dev/shm, /var/tmp, a System V shared memory segment, module globals, environment, sys.path
import builtins
import ctypes
import json
import os
import sys

import pandas

MARK = "pyclave-hostile-planted"


def tmp_entries():
    """/tmp's entries, without directories that only lead to read-only mounts
    (when the host keeps the venv or the runner's probe under /tmp)."""
    with open("/proc/self/mounts") as table:
        mounts = [line.split()[1] for line in table]
    return sorted(name for name in os.listdir("/tmp")
                  if not any(m == "/tmp/" + name or m.startswith("/tmp/" + name + "/") for m in mounts))


def main():
    found = [path for path in ("/tmp/" + MARK, "/dev/shm/" + MARK, "/var/tmp/" + MARK) if os.path.lexists(path)]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.shmget(0x50594350, 0, 0) >= 0:
        found.append("System V shm segment")
    if getattr(builtins, "PYCLAVE_PLANTED", None) or getattr(json, "PYCLAVE_PLANTED", None):
        found.append("module global")
    if hasattr(pandas.DataFrame, "pyclave_planted"):
        found.append("pandas class attribute")
    if "PYCLAVE_PLANTED" in os.environ:
        found.append("environment variable")
    if "/tmp" in sys.path or "pyclave_planted" in sys.modules:
        found.append("sys.path or sys.modules entry")
    return {"found": found, "tmp_entries": tmp_entries()}
