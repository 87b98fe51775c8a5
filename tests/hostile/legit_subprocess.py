# expect: ok value={"subprocess": [0, "42\n", ""], "fork_process": 0}
# must-not: break legitimate subprocesses: the interpreter started with subprocess, a forked multiprocessing.Process
import multiprocessing
import subprocess
import sys


def square(value):
    return value * value


def main():
    child = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, timeout=30)
    process = multiprocessing.get_context("fork").Process(target=square, args=(3,))
    process.start()
    process.join()
    return {"subprocess": [child.returncode, child.stdout, child.stderr], "fork_process": process.exitcode}
