/*
 * The zygote's memory laid out so that forking a worker stays cheap.
 *
 * fork() copies a page-table entry for every page of private memory that
 * holds a page of its own (anonymous memory, written file data), and the
 * child's exit drops each again: a pandas zygote holds ~45 MB of Python
 * objects and malloc heap, ~11,000 entries per worker. Not for a private
 * mapping of a file that the parent has not written to since it was
 * mapped: the kernel fills those entries on fault instead. So once warm,
 * the zygote moves its two big heaps onto a file: each becomes a private
 * mapping, at the same address, of a sealed memfd holding its bytes.
 * Copy-on-write as before (a worker's writes are its own, and so are the
 * zygote's), but a fork copies no entries for them, and a worker maps only
 * the pages it touches (16 at a time, the kernel's fault-around) and drops
 * only those when it exits.
 *
 * Two steps, both optional:
 *  1. CPython's object arenas come from one region (by default each 1 MiB
 *     arena is its own mapping, which every fork would duplicate), from
 *     the interpreter's start when this library is preloaded into the
 *     zygote (below; else from before the big imports, and the ~5 MiB of
 *     arenas CPython filled while starting stay anonymous, ~1,300 more
 *     page-table entries for every fork to copy);
 *  2. once the zygote is warm and serves (zygote.c: no Python runs in it
 *     then, which would touch its heaps and have forks copy the entries
 *     again), transparent huge pages are turned off for the process, and
 *     that region's used part and the malloc heap move onto the file; the
 *     workers inherit both: their own memory stays in 4 KiB pages (an
 *     idle worker small, no 2 MiB page zeroed on a first touch).
 * Of the allocators' memory only these two move, because of what their
 * allocators do with them (the libraries' data segments move too, in
 * mappings.c: no allocator manages them). A
 * private file mapping behaves like anonymous memory except that
 * MADV_DONTNEED brings back the file's bytes instead of zeroes, and that
 * it cannot grow past the file. CPython expects no zeroes from its arena
 * allocator (it initialises every pool it takes; the interface promises
 * none), and glibc grows and shrinks its main heap with brk (fresh
 * anonymous memory after the mapping, an unmap when it shrinks), never
 * counting on MADV_DONTNEED. glibc's large allocations (realloc moves them
 * with mremap) and other allocators' regions (which may count on zeroes)
 * stay anonymous.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "native.h"

#define HEAP_FILE_NAME PYCLAVE_ZYGOTE_FILE_PREFIX "heap"
/* Address space reserved for arenas (inaccessible, so not committed, until
   handed out): 1,024 of CPython 3.11's 1 MiB arenas; beyond that, arenas
   are mapped one by one as CPython would. */
#define ARENA_REGION_BYTES (1UL << 30)
#define MAX_FREE_ARENAS 1024

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
    /* The pages go back to the kernel (once the region is on the heap file,
       its bytes come back: CPython needs no zeroes); the addresses are kept
       for reuse. With no room to remember them, they stay reserved but
       unused. */
    madvise(address, size, MADV_DONTNEED);
    lock_region();
    if (free_arena_count < MAX_FREE_ARENAS) {
        free_arenas[free_arena_count].address = address;
        free_arenas[free_arena_count].size = size;
        free_arena_count++;
    }
    unlock_region();
}

int pyclave_use_arena_region(void) {
    if (region_start != NULL)
        return 0;
    void *mapping = mmap(NULL, ARENA_REGION_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED)
        return -1;
    region_start = mapping;
    static PyObjectArenaAllocator allocator = {NULL, arena_alloc, arena_free};
    PyObject_SetArenaAllocator(&allocator);
    return 0;
}

/*
 * Step 1 from the interpreter's start: the supervisor starts the zygote
 * with this library in LD_PRELOAD and PYCLAVE_ARENA_REGION_AT_START set,
 * and the loader runs this before CPython allocates anything. Both are
 * taken out of the environment at once: nothing the zygote or a job
 * starts loads the library again.
 */
__attribute__((constructor)) static void use_arena_region_at_start(void) {
    if (getenv("PYCLAVE_ARENA_REGION_AT_START") == NULL)
        return;
    unsetenv("PYCLAVE_ARENA_REGION_AT_START");
    unsetenv("LD_PRELOAD");
    /* Not an interpreter with CPython's arena interface: nothing to do. */
    if (dlsym(RTLD_DEFAULT, "PyObject_SetArenaAllocator") != NULL)
        pyclave_use_arena_region();
}

int pyclave_move_onto_file(uintptr_t start, uintptr_t end, const char *name) {
    size_t size = end - start;
    int file = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (file == -1)
        return -1;
    /* Every byte is written, untouched pages as zeroes: the file has all its
       pages from the start, so a worker's fault never adds one to it. */
    for (size_t done = 0; done < size;) {
        ssize_t written = pwrite(file, (const char *)start + done, size - done, (off_t)done);
        if (written <= 0) {
            if (written == -1 && errno == EINTR)
                continue;
            close(file);
            return -1;
        }
        done += (size_t)written;
    }
    /* Sealed: no one can change what every worker maps, or cut it short. */
    int sealed = fcntl(file, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    void *mapped = sealed == -1 ? MAP_FAILED
                                : mmap((void *)start, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, file, 0);
    int saved = errno;
    close(file);
    errno = saved;
    return mapped == MAP_FAILED ? -1 : 0;
}

/* The malloc heap's mapping: from the start of the data segment's break
   (/proc/self/stat, field 47) to the break, whole pages; read without
   allocating. */
static int malloc_heap(uintptr_t *start, uintptr_t *end) {
    char stat[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    ssize_t length = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (length <= 0)
        return -1;
    stat[length] = '\0';
    /* Fields count from the end of the command name, which may hold anything. */
    char *at = strrchr(stat, ')');
    for (int field = 2; at != NULL && field < 47; field++)
        at = strchr(at + 1, ' ');
    if (at == NULL) {
        errno = EINVAL;
        return -1;
    }
    *start = strtoull(at + 1, NULL, 10);
    *end = ((uintptr_t)sbrk(0) + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
    return 0;
}

int64_t pyclave_move_heaps_to_file(void) {
    /* First, whatever else fails: it is what keeps a job's memory small. */
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == -1)
        return -1;
    int64_t moved = 0;
    uintptr_t heap_start, heap_end;
    if (malloc_heap(&heap_start, &heap_end) == -1)
        return -1;
    if (heap_end > heap_start) {
        if (pyclave_move_onto_file(heap_start, heap_end, HEAP_FILE_NAME) == -1)
            return -1;
        moved += (int64_t)(heap_end - heap_start);
    }
    if (region_used > 0) {
        lock_region();
        int result = pyclave_move_onto_file((uintptr_t)region_start, (uintptr_t)region_start + region_used,
                                            HEAP_FILE_NAME);
        size_t used = region_used;
        unlock_region();
        if (result == -1)
            return -1;
        moved += (int64_t)used;
    }
    return moved;
}
