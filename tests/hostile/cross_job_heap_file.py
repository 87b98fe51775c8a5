# expect: ok value={"heap_file_mappings": 2, "private": true, "map_files_open": "PermissionError", "madvise_remove": "EACCES"}
# must-not: get a handle on the zygote's heap file, which every worker maps, or punch a page out of it (a change there would reach every later job; writes through the private mappings are copied, which persist_1/persist_2 check)
import ctypes
import os

MADV_REMOVE = 9


def main():
    with open("/proc/self/maps") as maps:
        heap = [line.split() for line in maps if "pyclave-zygote-heap" in line]
    end = int(heap[0][0].split("-")[1], 16)
    link = f"/proc/self/map_files/{heap[0][0]}"
    result = {"heap_file_mappings": len(heap), "private": all(fields[1] == "rw-p" for fields in heap)}
    try:
        os.close(os.open(link, os.O_RDWR))
        result["map_files_open"] = "opened"
    except OSError as error:
        result["map_files_open"] = type(error).__name__
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    # Punching out the heap's last page would drop it from the file for everyone.
    last_page = end - 4096
    if libc.madvise(last_page, 4096, MADV_REMOVE) == 0:
        result["madvise_remove"] = "removed"
    else:
        result["madvise_remove"] = {13: "EACCES", 22: "EINVAL", 1: "EPERM"}.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return result

