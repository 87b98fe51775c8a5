# expect: ok value={"attempts": {"/etc/shadow": "FileNotFoundError", "/etc/passwd": "FileNotFoundError", "/etc/ssh": "FileNotFoundError", "/root/.ssh": "FileNotFoundError", "/root/.bash_history": "FileNotFoundError", "/home": "FileNotFoundError", "/var/log": "FileNotFoundError", "/boot": "FileNotFoundError", "/proc/1/root/etc/shadow": "FileNotFoundError"}, "root_home_beyond_python": []}
# must-not: read host secrets: /etc/shadow, /etc/passwd, ssh keys, /root, /home, logs; see anything in /root but the path to the Python install
import os
import sys


def attempt(path):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as target:
                target.read()
        return "read"
    except OSError as error:
        return type(error).__name__


def main():
    targets = ["/etc/shadow", "/etc/passwd", "/etc/ssh", "/root/.ssh", "/root/.bash_history", "/home",
               "/var/log", "/boot", "/proc/1/root/etc/shadow"]
    attempts = {path: attempt(path) for path in targets}
    # /root exists only when the Python install lives there (e.g. pyenv): then
    # only the directories leading to it may be visible.
    allowed = set()
    for prefix in {sys.base_prefix, sys.prefix, sys.exec_prefix}:
        parts = prefix.split("/")
        allowed.update("/".join(parts[:i]) for i in range(2, len(parts) + 1))
    beyond = []
    for directory, subdirectories, files in os.walk("/root"):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            if path not in allowed and not any(path.startswith(p + "/") for p in (sys.base_prefix, sys.prefix)):
                beyond.append(path)
        subdirectories[:] = [d for d in subdirectories if os.path.join(directory, d) in allowed]
    return {"attempts": attempts, "root_home_beyond_python": beyond}
