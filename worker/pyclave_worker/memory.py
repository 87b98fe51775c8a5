"""The zygote's memory laid out for cheap forks.

fork() copies a page-table entry for every 4 KiB page of the zygote's ~55 MB
of Python objects and allocator heaps; on 2 MiB pages that is one entry per
2 MiB (worker/native/memory.c). It also duplicates every mapping, ~650 of
them with pandas loaded, which merging the segments of each library halves
(worker/native/mappings.c). Nothing here is needed for correctness: on a
host without transparent huge pages (or with them set to `never`) the
memory stays as it is, and a mapping that cannot be merged stays apart.
"""

from __future__ import annotations

import ctypes


class Layout:
    def __init__(self, native_library: str) -> None:
        # PyDLL: CPython's allocator is switched with the GIL held.
        library = ctypes.PyDLL(native_library, use_errno=True)
        self._use_arenas = library.pyclave_use_huge_page_arenas
        self._use_arenas.restype = ctypes.c_int
        self._collapse = library.pyclave_collapse_into_huge_pages
        self._collapse.restype = ctypes.c_int64
        self._merge = library.pyclave_merge_library_mappings
        self._merge.restype = ctypes.c_int64

    def back_object_arenas(self) -> None:
        """CPython's object arenas come from a region advised for huge pages
        from now on. Call it before the big imports: it moves nothing."""
        if self._use_arenas() != 0:
            raise OSError(ctypes.get_errno(), "reserving the huge-page region for arenas")

    def collapse(self) -> int:
        """Collapses the warm zygote's anonymous memory into huge pages, then
        turns huge pages off for it and the workers it forks (their own
        memory stays in 4 KiB pages). Returns the bytes collapsed."""
        collapsed = self._collapse()
        if collapsed < 0:
            raise OSError(ctypes.get_errno(), "collapsing into huge pages")
        return collapsed

    def merge_library_mappings(self) -> int:
        """Merges each loaded library's read-only segments into the code or
        data next to them (fewer mappings for every fork to copy). Call it
        once everything is loaded; returns the mappings left."""
        count = self._merge()
        if count < 0:
            raise OSError(ctypes.get_errno(), "merging the libraries' mappings")
        return count
