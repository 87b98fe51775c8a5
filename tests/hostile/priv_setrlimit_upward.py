# expect: ok value={"RLIMIT_NPROC": "ValueError", "RLIMIT_NOFILE": "ValueError", "RLIMIT_FSIZE": "ValueError", "RLIMIT_CORE": "ValueError", "prlimit(pid 1)": "PermissionError", "limits_after": [[64, 64], [256, 256], [33554432, 33554432], [0, 0]]}
# must-not: raise a hard resource limit (processes, open files, file size, core dumps), directly or through prlimit
import resource

NAMES = ("RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE")


def main():
    result = {}
    for name in NAMES:
        which = getattr(resource, name)
        _, hard = resource.getrlimit(which)
        try:
            resource.setrlimit(which, (hard + 1, hard + 1))
            result[name] = "raised"
        except (ValueError, OSError) as error:  # Python reports EPERM here as ValueError
            result[name] = type(error).__name__
    try:
        resource.prlimit(1, resource.RLIMIT_NOFILE, (65536, 65536))
        result["prlimit(pid 1)"] = "raised"
    except (ValueError, OSError) as error:
        result["prlimit(pid 1)"] = type(error).__name__
    result["limits_after"] = [list(resource.getrlimit(getattr(resource, name))) for name in NAMES]
    return result
