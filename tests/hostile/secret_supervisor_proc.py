# expect: ok value={"supervisor": ["FileNotFoundError", "FileNotFoundError", "FileNotFoundError"], "zygote": ["FileNotFoundError", "FileNotFoundError", "FileNotFoundError"], "canary_found_in": [], "parent_pid": 0}
# must-not: read the supervisor's or the zygote's /proc entries (environ holds the canary), or find the canary in any visible process
import os

CANARY = "{{CANARY}}".encode()


def attempt(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.listdir(path)
        else:
            with open(path, "rb") as entry:
                entry.read()
        return "read"
    except OSError as error:
        return type(error).__name__


def main():
    result = {}
    for who, pid in (("supervisor", {{SUPERVISOR_PID}}), ("zygote", {{ZYGOTE_PID}})):
        result[who] = [attempt(f"/proc/{pid}/{leaf}") for leaf in ("environ", "cmdline", "root/")]
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as environ:
                    if CANARY in environ.read():
                        found.append(name)
            except OSError:
                pass
    result["canary_found_in"] = found
    result["parent_pid"] = os.getppid()
    return result
