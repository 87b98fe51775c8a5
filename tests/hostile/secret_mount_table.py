# expect: ok value={"writable": ["/dev/shm", "/proc", "/tmp"], "covered": ["/proc"], "setuid_honoured": [], "unaccounted_top_level": []}
# must-not: find a writable mount beyond /tmp, /dev/shm (both private, capped tmpfs) and /proc, a covered mount beyond the zygote's /proc under the job's own (and the zygote's read-only binds under /tmp, bound again in the private /tmp), a mount that honours setuid bits, or a top-level entry that no mount explains
import os


def main():
    mounts = []
    with open("/proc/self/mounts") as table:
        for line in table:
            source, target, fstype, options = line.split()[:4]
            mounts.append((target, fstype, options.split(",")))
    writable = sorted({target for target, _, options in mounts if "rw" in options})
    targets = [target for target, _, _ in mounts]
    covered = sorted({target for target in targets if targets.count(target) > 1 and not target.startswith("/tmp/")})
    setuid = sorted(target for target, _, options in mounts if "nosuid" not in options)
    top = {target.split("/")[1] for target, _, _ in mounts if target != "/"}
    unaccounted = sorted(name for name in os.listdir("/") if name not in top and not os.path.islink("/" + name))
    return {"writable": writable, "covered": covered, "setuid_honoured": setuid,
            "unaccounted_top_level": unaccounted}
