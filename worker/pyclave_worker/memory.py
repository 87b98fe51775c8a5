"""The zygote's memory laid out for cheap forks.

fork() duplicates every mapping (~650 with pandas loaded, which merging the
segments of each library halves: worker/native/mappings.c), and copies a
page-table entry for every 4 KiB page of private memory of its own, ~45 MB
of Python objects and malloc heap in a pandas zygote. CPython's object
arenas come from one region instead of a mapping each, and once the zygote
serves, that region and the malloc heap move onto a file, whose pages a
fork does not copy entries for (worker/native/memory.c). Nothing here is
needed for correctness: a step that fails is reported and the zygote goes
on without it.
"""

from __future__ import annotations

import ctypes


class Layout:
    def __init__(self, native_library: str) -> None:
        # PyDLL: CPython's allocator is switched with the GIL held.
        library = ctypes.PyDLL(native_library, use_errno=True)
        self._use_arena_region = library.pyclave_use_arena_region
        self._use_arena_region.restype = ctypes.c_int
        self._merge = library.pyclave_merge_library_mappings
        self._merge.restype = ctypes.c_int64

    def back_object_arenas(self) -> None:
        """CPython's object arenas come from one region from now on (they
        already do when the library was preloaded). Call it before the big
        imports: it moves nothing."""
        if self._use_arena_region() != 0:
            raise OSError(ctypes.get_errno(), "reserving the region for arenas")

    def merge_library_mappings(self) -> int:
        """Merges each loaded library's read-only segments into the code or
        data next to them (fewer mappings for every fork to copy). Call it
        once everything is loaded; returns the mappings left."""
        count = self._merge()
        if count < 0:
            raise OSError(ctypes.get_errno(), "merging the libraries' mappings")
        return count
