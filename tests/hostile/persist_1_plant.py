# expect: ok value={"tmp": "planted", "dev_shm": "planted", "var_tmp": "FileNotFoundError", "sysv_shm": "planted", "globals": "planted"}
# must-not: (with persist_2_check.py, which runs next) leave anything for the next job; this half only plants
# Plants in every place a later job might look; persist_2_check.py looks.
import builtins
import ctypes
import json
import os
import sys

import pandas

MARK = "pyclave-hostile-planted"


def plant_file(path):
    try:
        with open(path, "w") as planted:
            planted.write(MARK)
        return "planted"
    except OSError as error:
        return type(error).__name__


def main():
    result = {
        "tmp": plant_file("/tmp/" + MARK),
        "dev_shm": plant_file("/dev/shm/" + MARK),
        "var_tmp": plant_file("/var/tmp/" + MARK),
    }
    libc = ctypes.CDLL(None, use_errno=True)
    segment = libc.shmget(0x50594350, 4096, 0o1666)  # IPC_CREAT | 0666
    result["sysv_shm"] = "planted" if segment >= 0 else os.strerror(ctypes.get_errno())
    builtins.PYCLAVE_PLANTED = MARK
    json.PYCLAVE_PLANTED = MARK
    pandas.DataFrame.pyclave_planted = MARK
    os.environ["PYCLAVE_PLANTED"] = MARK
    sys.path.insert(0, "/tmp")
    sys.modules["pyclave_planted"] = json
    result["globals"] = "planted"
    return result
