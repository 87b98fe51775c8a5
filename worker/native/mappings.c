/*
 * Fewer mappings in the zygote, so that fork and exit stay cheap.
 *
 * fork() duplicates every mapping of the zygote (the mapping itself, its
 * links into the file's and the anonymous memory's reverse maps) and each
 * worker's exit undoes it, whatever the mapping holds. A pandas zygote has
 * ~650 mappings, most of them five or six per loaded library: the dynamic
 * linker maps each ELF segment with its own protection (headers, code,
 * read-only data, RELRO, data), and every protection is a mapping of its
 * own. Adjacent mappings of one file merge when their protection is the
 * same, so each read-only segment is given its neighbour's: headers and
 * read-only data next to code become executable (the layout linkers
 * produced before `-z separate-code`), RELRO becomes writable again like
 * the data right after it. About 310 mappings remain.
 *
 * What this gives up is in-process hardening against memory corruption,
 * which protects nothing here: the zygote runs only pyclave's code, and a
 * job runs arbitrary code by design (Python with ctypes can write any byte
 * of its own process), so the boundary is the process and its confinement.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "native.h"

/* Loaded objects have one writable segment each, rarely two (a pandas
   zygote has ~100 objects). */
#define MAX_WRITABLE_SEGMENTS 1024

struct mapping {
    unsigned long start;
    unsigned long end;
    unsigned long offset;
    uint64_t device;
    unsigned long inode; /* 0: not a file */
    char permissions[5];
    int changed;
};

/* The process's mappings in address order, into a malloc'd array; their
   count, or -1 (errno). */
static ssize_t read_mappings(struct mapping **out) {
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return -1;
    size_t count = 0, capacity = 1024;
    struct mapping *mappings = malloc(capacity * sizeof *mappings);
    char line[512];
    while (mappings != NULL && fgets(line, sizeof line, maps) != NULL) {
        if (strchr(line, '\n') == NULL) {
            /* A long path: the fields before it are in `line`; skip the rest. */
            int c;
            while ((c = fgetc(maps)) != EOF && c != '\n')
                ;
        }
        struct mapping mapping = {0};
        unsigned int major, minor;
        if (sscanf(line, "%lx-%lx %4s %lx %x:%x %lu", &mapping.start, &mapping.end, mapping.permissions,
                   &mapping.offset, &major, &minor, &mapping.inode) != 7)
            continue;
        mapping.device = (uint64_t)major << 32 | minor;
        if (count == capacity) {
            capacity *= 2;
            struct mapping *grown = realloc(mappings, capacity * sizeof *mappings);
            if (grown == NULL) {
                free(mappings);
                mappings = NULL;
                break;
            }
            mappings = grown;
        }
        mappings[count++] = mapping;
    }
    fclose(maps);
    if (mappings == NULL) {
        errno = ENOMEM;
        return -1;
    }
    *out = mappings;
    return (ssize_t)count;
}

/* Whether `next` continues `mapping` in the same file, in memory and on disk:
   the kernel merges the two once their protection is the same. */
static int continues(const struct mapping *mapping, const struct mapping *next) {
    return mapping->inode != 0 && next->inode == mapping->inode && next->device == mapping->device &&
           next->start == mapping->end && next->offset == mapping->offset + (mapping->end - mapping->start);
}

/* Whether the file of `mappings[index]` is loaded code (has an executable mapping). */
static int is_loaded_code(const struct mapping *mappings, size_t count, size_t index) {
    for (size_t i = 0; i < count; i++) {
        if (mappings[i].inode == mappings[index].inode && mappings[i].device == mappings[index].device &&
            strcmp(mappings[i].permissions, "r-xp") == 0)
            return 1;
    }
    return 0;
}

/* Gives read-only segments of loaded code their neighbour's protection
   (writable data after it first, else code next to it); until nothing more
   changes, since read-only segments may be next to each other. */
static void plan(struct mapping *mappings, size_t count) {
    int changed = 1;
    while (changed) {
        changed = 0;
        for (size_t i = 0; i < count; i++) {
            struct mapping *mapping = &mappings[i];
            if (strcmp(mapping->permissions, "r--p") != 0 || !is_loaded_code(mappings, count, i))
                continue;
            const struct mapping *previous = i > 0 && continues(&mappings[i - 1], mapping) ? &mappings[i - 1] : NULL;
            const struct mapping *next = i + 1 < count && continues(mapping, &mappings[i + 1]) ? &mappings[i + 1] : NULL;
            const char *becomes = NULL;
            if (next != NULL && strcmp(next->permissions, "rw-p") == 0)
                becomes = "rw-p";
            else if ((previous != NULL && strcmp(previous->permissions, "r-xp") == 0) ||
                     (next != NULL && strcmp(next->permissions, "r-xp") == 0))
                becomes = "r-xp";
            if (becomes != NULL) {
                memcpy(mapping->permissions, becomes, sizeof mapping->permissions);
                mapping->changed = 1;
                changed = 1;
            }
        }
    }
}

/* The writable segments of the loaded objects, whole pages. */
struct writable_segments {
    size_t count;
    struct {
        unsigned long start;
        unsigned long end;
    } segments[MAX_WRITABLE_SEGMENTS];
};

static int add_writable_segments(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct writable_segments *found = data;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum && found->count < MAX_WRITABLE_SEGMENTS; i++) {
        const ElfW(Phdr) *header = &info->dlpi_phdr[i];
        if (header->p_type != PT_LOAD || !(header->p_flags & PF_W))
            continue;
        unsigned long start = info->dlpi_addr + header->p_vaddr;
        found->segments[found->count].start = start / PAGE_BYTES * PAGE_BYTES;
        found->segments[found->count].end = (start + header->p_memsz + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
        found->count++;
    }
    return 0;
}

/* Where the loaded object's writable segment holding `address` ends (its
   bss included), or 0. */
static unsigned long segment_end(const struct writable_segments *found, unsigned long address) {
    for (size_t i = 0; i < found->count; i++)
        if (found->segments[i].start <= address && address < found->segments[i].end)
            return found->segments[i].end;
    return 0;
}

/*
 * The same for the libraries' data as memory.c does for the heaps: the
 * data segment of a loaded library (RELRO merged into it) holds what the
 * dynamic linker wrote there, relocations, and its bss (the anonymous
 * mapping after it) what the library wrote since, so their pages are the
 * process's own, and every fork copies a page-table entry for each (~1,700
 * with pandas loaded, libpython's static objects among them). Each
 * segment, bss included, becomes one private mapping of a sealed memfd
 * holding its bytes, at the same address: copy-on-write as before, but
 * forks copy no entries for it and a worker maps only what it touches
 * (and one mapping less to copy where the bss was one of its own). The
 * bss ends where the object's program header says, so anonymous memory
 * mapped right after it stays as it is. Nothing counts on a library's data
 * being backed by the library's file or its bss being anonymous (the
 * dynamic linker finds a library by its link map, unloading unmaps the
 * whole range). A mapping that cannot move stays as it was.
 */
int64_t pyclave_move_library_data_to_files(void) {
    static struct writable_segments writable;
    writable.count = 0;
    dl_iterate_phdr(add_writable_segments, &writable);
    struct mapping *mappings;
    ssize_t count = read_mappings(&mappings);
    if (count < 0)
        return -1;
    int64_t moved = 0;
    for (ssize_t i = 0; i < count; i++) {
        const struct mapping *mapping = &mappings[i];
        if (strcmp(mapping->permissions, "rw-p") != 0 || mapping->inode == 0 ||
            !is_loaded_code(mappings, (size_t)count, (size_t)i))
            continue;
        unsigned long end = mapping->end;
        unsigned long bss_end = segment_end(&writable, mapping->start);
        const struct mapping *next = i + 1 < count ? &mappings[i + 1] : NULL;
        if (bss_end > end && next != NULL && next->inode == 0 && next->start == end && next->end >= bss_end &&
            strcmp(next->permissions, "rw-p") == 0)
            end = bss_end;
        if (pyclave_move_onto_file(mapping->start, end, PYCLAVE_ZYGOTE_FILE_PREFIX "library-data") == 0)
            moved += (int64_t)(end - mapping->start);
    }
    free(mappings);
    return moved;
}

int64_t pyclave_merge_library_mappings(void) {
    struct mapping *mappings;
    ssize_t count = read_mappings(&mappings);
    if (count < 0)
        return -1;
    plan(mappings, (size_t)count);
    for (ssize_t i = 0; i < count; i++) {
        const struct mapping *mapping = &mappings[i];
        if (!mapping->changed)
            continue;
        int protection = mapping->permissions[1] == 'w' ? PROT_READ | PROT_WRITE : PROT_READ | PROT_EXEC;
        /* A failure leaves that mapping as it was: merging is only cheaper. */
        mprotect((void *)mapping->start, mapping->end - mapping->start, protection);
    }
    free(mappings);
    /* Merged either way: a count that cannot be read is reported as 0. */
    ssize_t merged = read_mappings(&mappings);
    if (merged < 0)
        return 0;
    free(mappings);
    return merged;
}
