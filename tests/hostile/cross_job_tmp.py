# expect: ok value={"victim_file": false, "tmp_entries": [], "secret_found_in": []}
# victim: yes
# must-not: read the files another running job keeps in its /tmp (the victim wrote /tmp/victim-secret)
import os

SECRET = "{{VICTIM_SECRET}}".encode()


def tmp_entries():
    """/tmp's entries, without directories that only lead to read-only mounts
    (when the host keeps the venv or the runner's probe under /tmp)."""
    with open("/proc/self/mounts") as table:
        mounts = [line.split()[1] for line in table]
    return sorted(name for name in os.listdir("/tmp")
                  if not any(m == "/tmp/" + name or m.startswith("/tmp/" + name + "/") for m in mounts))


def main():
    found = []
    for top in ("/tmp", "/run", "/proc/1/root/tmp"):
        for directory, _, files in os.walk(top):
            for name in files:
                try:
                    with open(os.path.join(directory, name), "rb") as candidate:
                        if SECRET in candidate.read(1 << 20):
                            found.append(os.path.join(directory, name))
                except OSError:
                    pass
    return {"victim_file": os.path.exists("/tmp/victim-secret"), "tmp_entries": tmp_entries(),
            "secret_found_in": found}
