# Prepended by tests/hostile.rs to every hostile script: refuses to let the
# script's code run unless the job is confined. Raises SystemExit at import,
# so the outcome is a user_error "NOT CONFINED: ..." and the runner fails.
def _pyclave_guard():
    import os
    problems = []
    if os.getuid() < 1000:  # root, or a system account
        problems.append(f"uid {os.getuid()}")
    if os.getpid() != 1:
        problems.append(f"pid {os.getpid()} (not pid 1 of its own pid namespace)")
    try:
        with open("/proc/self/status") as status_file:
            status = status_file.read().splitlines()
    except OSError as error:
        status = []
        problems.append(f"/proc/self/status: {error}")
    for line in ("Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000",
                 "CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000"):
        if line not in status:
            problems.append(f"/proc/self/status lacks {line!r}")
    if os.path.lexists("/etc/shadow"):
        problems.append("/etc/shadow is visible")
    if problems:
        raise SystemExit("NOT CONFINED: " + "; ".join(problems))


_pyclave_guard()
del _pyclave_guard


def fd_linking_to(prefix):
    """The job's fd whose /proc/self/fd link starts with `prefix`, e.g. the
    output memfd ("/memfd:pyclave-output") or the worker channel ("socket:")."""
    import os

    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(prefix):
                return int(name)
        except OSError:
            pass
    raise RuntimeError(f"no fd linking to {prefix}")


# ---- end of guard and helpers; the hostile script follows ----
