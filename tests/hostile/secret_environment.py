# expect: ok value={"canary_found_in": [], "environ_files": {"/proc/self/environ": "PermissionError", "/proc/1/environ": "PermissionError"}, "variables": ["ARROW_DEFAULT_MEMORY_POOL", "HOME", "JE_ARROW_MALLOC_CONF", "LANG", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH", "PYTHONDONTWRITEBYTECODE", "TMPDIR"]}
# must-not: see the supervisor's environment (the runner set {{CANARY_VARIABLE}} in it) or any variable beyond the fixed job environment
import os

CANARY = "{{CANARY}}"


def main():
    found = []
    if "{{CANARY_VARIABLE}}" in os.environ or any(CANARY in value for value in os.environ.values()):
        found.append("os.environ")
    # The job is not dumpable, so its own /proc entries belong to root: the
    # environ files are closed even to itself.
    files = {}
    for path in ("/proc/self/environ", "/proc/1/environ"):
        try:
            with open(path, "rb") as environ:
                files[path] = "canary found" if CANARY.encode() in environ.read() else "read, no canary"
        except OSError as error:
            files[path] = type(error).__name__
    return {"canary_found_in": found, "environ_files": files, "variables": sorted(os.environ)}
