# expect: ok value={"writable": ["/dev/full", "/dev/null", "/dev/random", "/dev/urandom", "/dev/zero", "/proc", "/tmp"], "setuid_honoured": ["/dev/full", "/dev/null", "/dev/random", "/dev/urandom", "/dev/zero"], "unaccounted_top_level": []}
# must-not: find a writable mount beyond /tmp, /proc and the five device nodes, a directory mount that honours setuid bits, or a top-level entry that no mount explains
# setuid_honoured lists mounts without nosuid: only the bind-mounted device
# nodes, which are single character devices, not executables.
import os


def main():
    mounts = []
    with open("/proc/self/mounts") as table:
        for line in table:
            source, target, fstype, options = line.split()[:4]
            mounts.append((target, fstype, options.split(",")))
    writable = sorted(target for target, _, options in mounts if "rw" in options)
    setuid = sorted(target for target, _, options in mounts if "nosuid" not in options)
    top = {target.split("/")[1] for target, _, _ in mounts if target != "/"}
    unaccounted = sorted(name for name in os.listdir("/") if name not in top and not os.path.islink("/" + name))
    return {"writable": writable, "setuid_honoured": setuid,
            "unaccounted_top_level": unaccounted}
