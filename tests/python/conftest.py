"""Fixtures: a real supervisor for the end-to-end tests.

The supervisor binary is `$PYCLAVE_BIN`, or `target/debug/pyclave` in the
repository. Without it the end-to-end tests are skipped, except when `CI` is
set: there a missing binary fails them. Extra arguments for `pyclave serve`
can be given in `$PYCLAVE_SERVE_ARGS` (shell syntax).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def supervisor_binary() -> Path:
    return Path(os.environ.get("PYCLAVE_BIN") or REPO_ROOT / "target" / "debug" / "pyclave")


def _accepts_connections(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _log_tail(log: Path, limit: int = 4000) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:] or "(empty log)"


@pytest.fixture(scope="session")
def supervisor_socket() -> Iterator[Path]:
    """Starts `pyclave serve` on a fresh socket for the session; yields the socket path."""
    binary = supervisor_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        message = f"the supervisor binary {binary} does not exist (build it or set PYCLAVE_BIN)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    workdir = Path(tempfile.mkdtemp(prefix="pyclave-test-"))  # short: socket paths are limited
    sock_path = workdir / "s.sock"
    log_path = workdir / "supervisor.log"
    env = dict(os.environ)
    # The supervisor's default interpreter is `python3` on PATH: make it this venv's.
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
    command = [
        str(binary),
        "serve",
        "--socket",
        str(sock_path),
        *shlex.split(os.environ.get("PYCLAVE_SERVE_ARGS", "")),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts_connections(sock_path):
            if process.poll() is not None:
                pytest.fail(
                    f"the supervisor exited with status {process.returncode} before it "
                    f"accepted connections:\n{_log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the supervisor did not accept connections within {START_TIMEOUT_S:.0f} s:\n"
                    f"{_log_tail(log_path)}"
                )
            time.sleep(0.05)
        yield sock_path
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
