# expect: ok rows=100 stdout="ways that wrote into the input: []\n"
# kind: transform
# input-rows: 100
# must-not: write into the caller's input table (a memfd the caller still holds; memfds are mode 0777): not by re-opening a descriptor of it through /proc/self/fd with O_RDWR, not by making its read-only mapping writable; the runner also checks the input is unchanged afterwards
import ctypes
import os


def transform(table, params):
    wrote = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:test-input"):
                continue
            writable = os.open(f"/proc/self/fd/{name}", os.O_RDWR)
            os.pwrite(writable, b"OVERWRITTEN BY THE JOB", 0)
            wrote.append(f"re-opened fd {name} read-write")
        except OSError:
            pass
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "/memfd:test-input" in line:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if libc.mprotect(start, end - start, 3) == 0:  # PROT_READ | PROT_WRITE
                    ctypes.memmove(start, b"OVERWRITTEN", 11)
                    wrote.append("made the mapping writable")
    print(f"ways that wrote into the input: {wrote}")
    return table
