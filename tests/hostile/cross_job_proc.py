# expect: ok value={"visible_pids": [1], "victim_proc": "FileNotFoundError", "signal_victim": "ProcessLookupError", "secret_found_in": []}
# victim: yes
# must-not: see, signal or read the /proc entries (environ, cmdline) of another job running at the same time
import os

SECRET = "{{VICTIM_SECRET}}".encode()
VICTIM = {{VICTIM_HOST_PID}}


def main():
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    found = []
    for pid in pids:
        for leaf in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{leaf}", "rb") as entry:
                    if SECRET in entry.read():
                        found.append(f"/proc/{pid}/{leaf}")
            except OSError:
                pass
    try:
        with open(f"/proc/{VICTIM}/environ", "rb") as entry:
            victim_proc = "read: " + str(SECRET in entry.read())
    except OSError as error:
        victim_proc = type(error).__name__
    try:
        os.kill(VICTIM, 0)
        signal_victim = "delivered"
    except OSError as error:
        signal_victim = type(error).__name__
    return {"visible_pids": pids, "victim_proc": victim_proc, "signal_victim": signal_victim,
            "secret_found_in": found}
