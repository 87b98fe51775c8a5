/*
 * The zygote's memory on 2 MiB pages, so that forking a worker stays cheap.
 *
 * fork() copies one page-table entry for every anonymous 4 KiB page of the
 * parent (taking a reference on the page): a pandas zygote holds ~55 MB of
 * Python objects and allocator heaps, ~14,000 entries per worker, most of
 * the fork floor. A transparent huge page is one entry for 2 MiB, shared by
 * the child until it writes to it (then the kernel splits the child's
 * mapping into 512 entries and copies the 4 KiB page written). A worker
 * writes into most of them as it starts, so its exit still drops about as
 * many entries as before: the gain is the zygote's, per fork.
 *
 * Three steps, all optional (without transparent huge pages, or with them
 * set to `never`, the memory stays in 4 KiB pages):
 *  1. before the libraries are imported, CPython's object arenas come from
 *     one region advised for huge pages (by default each 1 MiB arena is its
 *     own mapping, never 2 MiB aligned);
 *  2. once the zygote is warm, its anonymous memory is collapsed into huge
 *     pages (MADV_COLLAPSE: the glibc heap, large allocations, the arena
 *     region), then huge pages are turned off for the process, which the
 *     workers inherit: their own new memory stays in 4 KiB pages (an idle
 *     worker small, no 2 MiB page zeroed on a first touch);
 *  3. a new worker, in its job's cgroup, splits its mapping of each of those
 *     huge pages before it takes a job (by write-faulting one page of each,
 *     ~70 KiB in all): the first write into a huge page otherwise splits it
 *     on the job's path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "native.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define HUGE_PAGE_BYTES (2UL << 20)
#define PAGE_BYTES 4096UL
/* Address space reserved for arenas (inaccessible, so not committed, until
   handed out): 1,024 of CPython 3.11's 1 MiB arenas; beyond that, arenas
   are mapped one by one as CPython would. */
#define ARENA_REGION_BYTES (1UL << 30)
#define MAX_FREE_ARENAS 1024
/* Huge pages remembered for the workers to split: 8 GiB worth. */
#define MAX_HUGE_PAGES 4096

/* CPython's arena allocator interface (Include/cpython/objimpl.h), stable
   since 3.4; resolved from the interpreter that loads this library. */
typedef struct {
    void *ctx;
    void *(*alloc)(void *ctx, size_t size);
    void (*free)(void *ctx, void *ptr, size_t size);
} PyObjectArenaAllocator;
void PyObject_SetArenaAllocator(PyObjectArenaAllocator *allocator);

/* The arena region. CPython allocates its object arenas and its frame-stack
   chunks (16 KiB and up) here, with its GIL held, but a thread state may be
   deleted without it: a spin lock keeps the state whole. The zygote forks
   with one thread, so a fork never copies it locked. */
static atomic_flag region_lock = ATOMIC_FLAG_INIT;
static char *region_start;
static size_t region_used;
static struct {
    void *address;
    size_t size;
} free_arenas[MAX_FREE_ARENAS];
static size_t free_arena_count;

/* The zygote's huge pages, written before the first fork, read in workers. */
static uintptr_t huge_pages[MAX_HUGE_PAGES];
static size_t huge_page_count;

static int in_region(const void *address) {
    const char *byte = address;
    return region_start != NULL && byte >= region_start && byte < region_start + ARENA_REGION_BYTES;
}

static void lock_region(void) {
    while (atomic_flag_test_and_set_explicit(&region_lock, memory_order_acquire))
        ;
}

static void unlock_region(void) {
    atomic_flag_clear_explicit(&region_lock, memory_order_release);
}

/* A block of the region: a freed one of the same size, or the next unused
   part (made accessible now); NULL when the region is full. */
static void *take_from_region(size_t size) {
    for (size_t i = free_arena_count; i-- > 0;) {
        if (free_arenas[i].size == size) {
            void *address = free_arenas[i].address;
            free_arenas[i] = free_arenas[--free_arena_count];
            return address;
        }
    }
    if (size > ARENA_REGION_BYTES - region_used)
        return NULL;
    void *address = region_start + region_used;
    if (mprotect(address, size, PROT_READ | PROT_WRITE) == -1)
        return NULL;
    region_used += size;
    return address;
}

static void *arena_alloc(void *ctx, size_t size) {
    (void)ctx;
    size = (size + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
    lock_region();
    void *address = take_from_region(size);
    unlock_region();
    if (address != NULL)
        return address;
    address = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return address == MAP_FAILED ? NULL : address;
}

static void arena_free(void *ctx, void *address, size_t size) {
    (void)ctx;
    size = (size + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
    if (!in_region(address)) {
        munmap(address, size); /* mapped by CPython's allocator or the fallback */
        return;
    }
    /* The pages go back to the kernel; the addresses are kept for reuse.
       With no room to remember them, they stay reserved but unused. */
    madvise(address, size, MADV_DONTNEED);
    lock_region();
    if (free_arena_count < MAX_FREE_ARENAS) {
        free_arenas[free_arena_count].address = address;
        free_arenas[free_arena_count].size = size;
        free_arena_count++;
    }
    unlock_region();
}

int pyclave_use_huge_page_arenas(void) {
    if (region_start != NULL) {
        errno = EALREADY;
        return -1;
    }
    /* Over-reserve by one huge page, then trim, for a 2 MiB-aligned start. */
    size_t reserved = ARENA_REGION_BYTES + HUGE_PAGE_BYTES;
    char *mapping = mmap(NULL, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED)
        return -1;
    uintptr_t misalignment = (uintptr_t)mapping % HUGE_PAGE_BYTES;
    size_t head = misalignment == 0 ? 0 : HUGE_PAGE_BYTES - misalignment;
    if (head > 0)
        munmap(mapping, head);
    munmap(mapping + head + ARENA_REGION_BYTES, reserved - head - ARENA_REGION_BYTES);
    region_start = mapping + head;
    /* Advice only: without huge pages the region is ordinary memory. */
    madvise(region_start, ARENA_REGION_BYTES, MADV_HUGEPAGE);
    static PyObjectArenaAllocator allocator = {NULL, arena_alloc, arena_free};
    PyObject_SetArenaAllocator(&allocator);
    return 0;
}

/* Whether at least half of the 2 MiB at `page` is in memory: collapsing
   fills the rest with zeroes, which a sparse range would mostly be. */
static int mostly_resident(void *page) {
    unsigned char resident[HUGE_PAGE_BYTES / PAGE_BYTES];
    if (mincore(page, HUGE_PAGE_BYTES, resident) == -1)
        return 0;
    size_t count = 0;
    for (size_t i = 0; i < sizeof resident; i++)
        count += resident[i] & 1;
    return count >= sizeof resident / 2;
}

/* Whether the host has transparent huge pages turned off (`never`), which
   MADV_COLLAPSE would not respect. */
static int huge_pages_off(void) {
    FILE *setting = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
    if (setting == NULL)
        return 1;
    char modes[128] = "";
    int off = fgets(modes, sizeof modes, setting) == NULL || strstr(modes, "[never]") != NULL;
    fclose(setting);
    return off;
}

int64_t pyclave_collapse_into_huge_pages(void) {
    if (huge_pages_off())
        return 0;
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return -1;
    int64_t collapsed = 0;
    char line[512];
    while (fgets(line, sizeof line, maps) != NULL) {
        if (strchr(line, '\n') == NULL) {
            /* A path longer than the line: not anonymous memory; skip the rest. */
            int c;
            while ((c = fgetc(maps)) != EOF && c != '\n')
                ;
            continue;
        }
        unsigned long start, end;
        char permissions[5];
        int path_offset = 0;
        if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &start, &end, permissions, &path_offset) < 3)
            continue;
        const char *path = line + path_offset;
        /* Private writable memory not backed by a file: the heap, and
           anonymous mappings (a file's private pages cannot be collapsed). */
        int anonymous = path[0] == '\n' || path[0] == '\0' || strncmp(path, "[heap]", 6) == 0;
        if (strcmp(permissions, "rw-p") != 0 || !anonymous)
            continue;
        unsigned long first = (start + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        unsigned long last = end / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        /* Page by page: one that cannot be collapsed (an allocator marked it
           no-huge) does not stop the others. */
        for (unsigned long page = first; page < last; page += HUGE_PAGE_BYTES) {
            if (huge_page_count == MAX_HUGE_PAGES)
                break;
            if (mostly_resident((void *)page) && madvise((void *)page, HUGE_PAGE_BYTES, MADV_COLLAPSE) == 0) {
                huge_pages[huge_page_count++] = page;
                collapsed += HUGE_PAGE_BYTES;
            }
        }
    }
    fclose(maps);
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == -1)
        return -1;
    return collapsed;
}

void pyclave_split_huge_pages(void) {
    /* MADV_POPULATE_WRITE faults the page in writable without touching its
       contents: the copy-on-write copies one page and splits the mapping.
       Failures only leave the split to the first real write. */
    for (size_t i = 0; i < huge_page_count; i++)
        madvise((void *)huge_pages[i], PAGE_BYTES, MADV_POPULATE_WRITE);
}
