# expect: ok value={"config": "FileNotFoundError", "socket": "FileNotFoundError", "socket_dir": "FileNotFoundError", "parent": ["<runtime>"], "runtime": ["python"]}
# must-not: read the supervisor's config file or see its socket directory; see more of the runtime directory than the read-only worker code
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
    runtime = os.path.dirname(sys.modules["pyclave_worker"].__path__[0])  # <parent>/pyclave-<pid>/python
    runtime_name = os.path.basename(os.path.dirname(runtime))
    parent = os.path.dirname(os.path.dirname(runtime))  # /run as root, the temp directory rootless
    # Python's own paths are bound on purpose (a checkout under /tmp puts its venv there).
    python_paths = [path for path in sys.path + [sys.prefix, sys.base_prefix] if path]

    def python_path(name):
        full = os.path.join(parent, name)
        return any(path == full or path.startswith(full + "/") for path in python_paths)
    return {
        "config": attempt("{{CONFIG_PATH}}"),
        "socket": attempt("{{SOCKET_PATH}}"),
        "socket_dir": attempt(os.path.dirname("{{SOCKET_PATH}}")),
        "parent": ["<runtime>" if name == runtime_name else name
                   for name in sorted(os.listdir(parent)) if name == runtime_name or not python_path(name)],
        "runtime": sorted(os.listdir(os.path.dirname(runtime))),
    }
