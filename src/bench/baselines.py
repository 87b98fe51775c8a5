"""Baselines for `pyclave bench`: what callers would do without pyclave.

Usage: python baselines.py MODE CODE_FILE INPUT_FILE JOBS
  cold       a fresh `python -c` per job that imports pandas/pyarrow, reads the
             input Arrow file, runs the code, writes the output (script runners)
  bwrap      the same under bubblewrap (`bwrap` on PATH)
  inprocess  the same work as a worker's job, in this process, unsandboxed
  forkrate   fork+exit+wait of a process that imported pandas/pyarrow/numpy
             and called gc.freeze(), its libraries' mappings merged, its heaps
             on a file and forking from native code like pyclave's zygote
             (the input argument names pyclave's native library)
Prints one JSON object: {"latencies_us": [...]}.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time

RUNNER = r"""
import json, sys
import pandas, pyarrow, pyarrow.ipc
code_file, input_file, output_file = sys.argv[1:4]
namespace = {}
exec(compile(open(code_file).read(), code_file, "exec"), namespace)
if "transform" in namespace:
    table = pyarrow.ipc.open_file(pyarrow.memory_map(input_file)).read_all() if input_file else None
    frame = table.to_pandas(split_blocks=True) if table is not None else pandas.DataFrame()
    result = pyarrow.Table.from_pandas(namespace["transform"](frame, {}))
    with pyarrow.OSFile(output_file, "wb") as sink, pyarrow.ipc.new_file(sink, result.schema) as writer:
        writer.write_table(result)
else:
    json.dumps(namespace["main"]())
"""

BWRAP = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
         "--ro-bind", "{work}", "{work}", "--bind", "{out}", "{out}",
         "--unshare-all", "--die-with-parent", "--new-session"]


def subprocess_per_job(code_file: str, input_file: str, jobs: int, sandbox: list[str]) -> list[int]:
    latencies = []
    with tempfile.TemporaryDirectory() as out:
        output = os.path.join(out, "out.arrow")
        work = os.path.dirname(os.path.abspath(code_file))
        prefix = [part.replace("{out}", out).replace("{work}", work) for part in sandbox]
        command = [*prefix, sys.executable, "-c", RUNNER, code_file, input_file, output]
        for _ in range(jobs):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, env={"PATH": os.environ.get("PATH", ""),
                                                                     "OPENBLAS_NUM_THREADS": "1"})
            if done.returncode != 0:
                last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                sys.exit(f"the job failed ({done.returncode}): {last}")
            latencies.append(int((time.perf_counter() - started) * 1e6))
    return latencies


def in_process(code_file: str, input_file: str, jobs: int) -> list[int]:
    import mmap

    import pandas
    import pyarrow
    import pyarrow.ipc

    namespace: dict = {}
    exec(compile(open(code_file).read(), code_file, "exec"), namespace)
    latencies = []
    for _ in range(jobs):
        started = time.perf_counter()
        if "transform" in namespace:
            frame = pandas.DataFrame()
            if input_file:
                with open(input_file, "rb") as handle:
                    mapped = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
                frame = pyarrow.ipc.open_file(pyarrow.py_buffer(mapped)).read_all().to_pandas(split_blocks=True)
            result = pyarrow.Table.from_pandas(namespace["transform"](frame, {}))
            fd = os.memfd_create("baseline-output")
            with os.fdopen(fd, "wb") as sink, pyarrow.ipc.new_file(sink, result.schema) as writer:
                writer.write_table(result)
        else:
            json.dumps(namespace["main"]())
        latencies.append(int((time.perf_counter() - started) * 1e6))
    return latencies


def fork_rate(jobs: int, native_library: str) -> list[int]:
    import ctypes

    # The zygote's memory layout: arenas in their region before the imports,
    # libraries' mappings merged after, the heaps moved onto a file by the
    # native loop (pyclave_worker/memory.py, next to the library).
    sys.path.insert(0, os.path.dirname(native_library))
    from pyclave_worker.memory import Layout

    layout = Layout(native_library)
    layout.back_object_arenas()
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    gc.collect()
    gc.freeze()
    layout.merge_library_mappings()
    fork_exit_wait = ctypes.PyDLL(native_library, use_errno=True).pyclave_fork_exit_wait
    fork_exit_wait.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64)]
    latencies = (ctypes.c_uint64 * jobs)()
    if fork_exit_wait(jobs, latencies) != 0:
        raise OSError(ctypes.get_errno(), "fork+exit+wait")
    return list(latencies)


def main() -> None:
    mode, code_file, input_file, jobs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "cold":
        latencies = subprocess_per_job(code_file, input_file, jobs, [])
    elif mode == "bwrap":
        latencies = subprocess_per_job(code_file, input_file, jobs, BWRAP)
    elif mode == "inprocess":
        latencies = in_process(code_file, input_file, jobs)
    elif mode == "forkrate":
        latencies = fork_rate(jobs, input_file)
    else:
        sys.exit(f"unknown mode {mode}")
    print(json.dumps({"latencies_us": latencies}))


if __name__ == "__main__":
    main()
