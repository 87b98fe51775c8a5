# expect: ok value={"site-packages .pth": "EROFS", "stdlib sitecustomize": "EROFS", "worker code": "EACCES", "setuid probe": "EACCES", "/": "EROFS", "/dev": "EROFS"}
# must-not: write anywhere outside /tmp: a .pth or sitecustomize that later jobs would run, the worker's own code, the root, /dev
# New files answer EROFS (read-only mounts); existing root-owned files answer
# EACCES first (the job does not own them), and their mount is read-only too.
import errno
import os
import sys

import pandas


def attempt(path):
    try:
        with open(path, "a") as target:
            target.write("import os\n")
        return "written"
    except OSError as error:
        return errno.errorcode[error.errno]


def main():
    return {
        "site-packages .pth": attempt(os.path.join(os.path.dirname(os.path.dirname(pandas.__file__)), "zz-hostile.pth")),
        "stdlib sitecustomize": attempt(os.path.join(os.path.dirname(os.__file__), "sitecustomize.py")),
        "worker code": attempt(sys.modules["pyclave_worker.job"].__file__),
        "setuid probe": attempt("{{SETUID_PROBE}}"),
        "/": attempt("/hostile"),
        "/dev": attempt("/dev/hostile"),
    }
