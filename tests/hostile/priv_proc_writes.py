# expect: ok value={"/proc/sys/kernel/core_pattern": "EACCES", "/proc/sysrq-trigger": "ENOENT", "/proc/self/oom_score_adj": "EACCES", "/proc/self/uid_map": "EACCES", "/proc/self/setgroups": "EACCES", "/proc/sys/vm/drop_caches": "EACCES"}
# must-not: change kernel or process settings through /proc: core_pattern (runs a program as root), sysrq, its own OOM score (to be killed last), its id maps
import errno


def attempt(path, data):
    try:
        with open(path, "w") as target:
            target.write(data)
        return "written"
    except OSError as error:
        return errno.errorcode[error.errno]


def main():
    return {
        "/proc/sys/kernel/core_pattern": attempt("/proc/sys/kernel/core_pattern", "|/tmp/evil"),
        "/proc/sysrq-trigger": attempt("/proc/sysrq-trigger", "b"),
        "/proc/self/oom_score_adj": attempt("/proc/self/oom_score_adj", "-1000"),
        "/proc/self/uid_map": attempt("/proc/self/uid_map", "0 0 1"),
        "/proc/self/setgroups": attempt("/proc/self/setgroups", "allow"),
        "/proc/sys/vm/drop_caches": attempt("/proc/sys/vm/drop_caches", "3"),
    }
