/*
 * The pages every worker writes, copied in one go when it starts.
 *
 * A worker writes to a few hundred of the zygote's pages on a job's path
 * (reference counts in shared objects, mostly on the heap file, memory.c,
 * and the libraries' data, mappings.c), and each write is a copy-on-write
 * fault: a trap per page, expensive in a guest whose page tables the
 * hypervisor shadows. Which pages those are depends only on the zygote's
 * memory and the job path, so the zygote learns them once: when it starts
 * serving it forks a recorder per path (a trivial job's; a transform's
 * too), which runs the worker's path (its reseed and a rehearsal, worker.py)
 * unconfined, since it runs no job's code, then reads its own page map and
 * sends back the runs of pages it copied from the zygote's files. Each
 * worker then asks for copies of the runs of its path (the supervisor says
 * which) with MADV_POPULATE_WRITE, in one process_madvise call, right after
 * it joins its job's cgroup (the memory is the job's). Nothing here is needed for
 * correctness: a copy has the zygote's bytes, as a fault's would; a failed
 * call only leaves the faults to happen.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "native.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif
#ifndef PIDFD_SELF_THREAD_GROUP
#define PIDFD_SELF_THREAD_GROUP -10001 /* Linux 6.14 */
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

/* A recorder runs pyclave's own rehearsal, ~0.1 s; the zygote serves no
   spawn while it waits, and stops waiting after this. */
#define RECORDER_TIME_LIMIT_MS 10000
/* More runs than a transform's path writes (~1,090; a trivial job's ~250):
   the rest fault as before. */
#define MAX_RUNS 4096
/* process_madvise takes at most this many runs a call (UIO_MAXIOV). */
#define RUNS_PER_CALL 1024
/* /proc/self/pagemap: one little-endian word per page. */
#define PAGE_PRESENT (1ULL << 63)
#define PAGE_FILE_OR_SHARED (1ULL << 61)
#define PAGE_EXCLUSIVE (1ULL << 56)
#define PAGEMAP_WORDS_PER_READ 512
/* The paths learnt, indexed by the rehearsal that runs them. */
#define LEARNT_PATHS 2
_Static_assert(PYCLAVE_REHEARSAL_EXEC == 0 && PYCLAVE_REHEARSAL_EXEC_AND_TRANSFORM == 1, "paths by rehearsal");

/* A run is an iovec, the form process_madvise takes. */
struct run_list {
    struct iovec runs[MAX_RUNS];
    size_t count;
};

/* In the zygote once it has learnt them; every worker reads them. */
static struct run_list learnt[LEARNT_PATHS];

static void add_page(struct run_list *list, uintptr_t page) {
    struct iovec *last = list->count > 0 ? &list->runs[list->count - 1] : NULL;
    if (last != NULL && (uintptr_t)last->iov_base + last->iov_len == page) {
        last->iov_len += PAGE_BYTES;
        return;
    }
    if (list->count < MAX_RUNS)
        list->runs[list->count++] = (struct iovec){(void *)page, PAGE_BYTES};
}

/* Adds the pages of [start, end) this process copied (present, anonymous,
   mapped by it alone: not the file's, and not a copy the zygote made for
   itself before the fork, which both map). */
static int add_copied_pages(int pagemap, uintptr_t start, uintptr_t end, struct run_list *list) {
    uint64_t words[PAGEMAP_WORDS_PER_READ];
    for (uintptr_t page = start; page < end;) {
        size_t pages = (end - page) / PAGE_BYTES;
        if (pages > PAGEMAP_WORDS_PER_READ)
            pages = PAGEMAP_WORDS_PER_READ;
        ssize_t got = pread(pagemap, words, pages * sizeof *words, (off_t)(page / PAGE_BYTES * sizeof *words));
        if (got <= 0 || got % sizeof *words != 0) {
            if (got == 0)
                errno = EIO;
            return -1;
        }
        for (size_t i = 0; i < (size_t)got / sizeof *words; i++, page += PAGE_BYTES)
            if ((words[i] & (PAGE_PRESENT | PAGE_FILE_OR_SHARED | PAGE_EXCLUSIVE)) == (PAGE_PRESENT | PAGE_EXCLUSIVE))
                add_page(list, page);
    }
    return 0;
}

int pyclave_record_copied_pages(int fd) {
    static struct run_list list; /* too big for the stack */
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return -1;
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap == -1) {
        int saved = errno;
        fclose(maps);
        errno = saved;
        return -1;
    }
    char line[512];
    int result = 0;
    while (result == 0 && fgets(line, sizeof line, maps) != NULL) {
        uintptr_t start, end;
        char permissions[5];
        int name_at = 0;
        if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &start, &end, permissions, &name_at) != 3 || name_at == 0)
            continue;
        /* The zygote's memory on files: its heaps and the libraries' data. */
        if (strcmp(permissions, "rw-p") == 0 && strncmp(line + name_at, "/memfd:" PYCLAVE_ZYGOTE_FILE_PREFIX,
                                                        strlen("/memfd:" PYCLAVE_ZYGOTE_FILE_PREFIX)) == 0)
            result = add_copied_pages(pagemap, start, end, &list);
    }
    int saved = errno;
    fclose(maps);
    close(pagemap);
    if (result == -1) {
        errno = saved;
        return -1;
    }
    const char *bytes = (const char *)list.runs;
    size_t length = list.count * sizeof *list.runs;
    for (size_t done = 0; done < length;) {
        ssize_t written = write(fd, bytes + done, length - done);
        if (written == -1 && errno == EINTR)
            continue;
        if (written <= 0)
            return -1;
        done += (size_t)written;
    }
    return 0;
}

/* Reads a recorder's runs from `fd` into `list` until it closes the pipe,
   within RECORDER_TIME_LIMIT_MS of `started_us`; 0, or -1 (errno;
   ETIMEDOUT once the time is up). */
static int read_runs(int fd, uint64_t started_us, struct run_list *list) {
    size_t length = 0;
    char *bytes = (char *)list->runs;
    while (length < sizeof list->runs) {
        uint64_t elapsed_ms = (pyclave_monotonic_us() - started_us) / 1000;
        if (elapsed_ms >= RECORDER_TIME_LIMIT_MS) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd readable = {.fd = fd, .events = POLLIN};
        int ready = poll(&readable, 1, (int)(RECORDER_TIME_LIMIT_MS - elapsed_ms));
        if (ready == 0 || (ready == -1 && errno == EINTR))
            continue;
        if (ready == -1)
            return -1;
        ssize_t got = read(fd, bytes + length, sizeof list->runs - length);
        if (got == -1 && errno == EINTR)
            continue;
        if (got == -1)
            return -1;
        if (got == 0)
            break;
        length += (size_t)got;
    }
    if (length % sizeof *list->runs != 0) {
        errno = EPROTO;
        return -1;
    }
    list->count = length / sizeof *list->runs;
    return 0;
}

static const char *const path_names[LEARNT_PATHS] = {"a trivial job's", "a transform's"};

/* The zygote learns nothing of `path`: workers fault its pages one by one. */
static int give_up(uint32_t path, const char *what) {
    learnt[path].count = 0;
    fprintf(stderr, "pyclave zygote: %s recorder: %s: %s; workers copy the zygote's pages of its path as they fault\n",
            path_names[path], what, strerror(errno));
    return 1;
}

/* Forks the recorder of `path` (returns 0 there, with `*recorder_fd` where
   its pages go) and waits for its pages (returns 1). */
static int learn_path(uint32_t path, int *recorder_fd) {
    learnt[path].count = 0;
    int runs[2];
    if (pipe2(runs, O_CLOEXEC) == -1)
        return give_up(path, "a pipe");
    pid_t zygote = getpid();
    uint64_t started_us = pyclave_monotonic_us();
    pid_t recorder = pyclave_fork_without_handlers();
    if (recorder == 0) {
        /* It never outlives the zygote, which may stop waiting for it. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != zygote)
            _exit(1);
        close(runs[0]);
        *recorder_fd = runs[1];
        return 0;
    }
    close(runs[1]);
    if (recorder == -1) {
        close(runs[0]);
        return give_up(path, "fork");
    }
    int read = read_runs(runs[0], started_us, &learnt[path]);
    int saved = errno;
    int timed_out = read == -1 && saved == ETIMEDOUT;
    close(runs[0]);
    if (timed_out)
        kill(recorder, SIGKILL);
    int status;
    while (waitpid(recorder, &status, 0) == -1)
        if (errno != EINTR)
            return give_up(path, "wait");
    if (timed_out) {
        learnt[path].count = 0;
        fprintf(stderr, "pyclave zygote: %s recorder did not finish within %d ms; workers copy the zygote's pages of "
                        "its path as they fault\n", path_names[path], RECORDER_TIME_LIMIT_MS);
        return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        learnt[path].count = 0;
        fprintf(stderr, "pyclave zygote: %s recorder ended with wait status %#x; workers copy the zygote's pages of "
                        "its path as they fault\n", path_names[path], (unsigned int)status);
        return 1;
    }
    errno = saved;
    return read == -1 ? give_up(path, "read its pages") : 1;
}

int pyclave_learn_copied_pages(int *recorder_fd, uint32_t *rehearsal) {
    for (uint32_t path = 0; path < LEARNT_PATHS; path++)
        if (learn_path(path, recorder_fd) == 0) {
            *rehearsal = path;
            return 0;
        }
    return 1;
}

uint64_t pyclave_copy_learnt_pages(int transform) {
    const struct run_list *list = &learnt[PYCLAVE_REHEARSAL_EXEC];
    if (transform && learnt[PYCLAVE_REHEARSAL_EXEC_AND_TRANSFORM].count > 0)
        list = &learnt[PYCLAVE_REHEARSAL_EXEC_AND_TRANSFORM];
    uint64_t pages = 0;
    /* Up to RUNS_PER_CALL runs a call (~250 for a trivial job's path,
       mostly single pages, each a system call otherwise). */
    for (size_t done = 0; done < list->count; done += RUNS_PER_CALL) {
        size_t count = list->count - done < RUNS_PER_CALL ? list->count - done : RUNS_PER_CALL;
        ssize_t copied = syscall(SYS_process_madvise, PIDFD_SELF_THREAD_GROUP, list->runs + done, count,
                                 MADV_POPULATE_WRITE, 0);
        if (copied >= 0) {
            pages += (uint64_t)copied / PAGE_BYTES;
            continue;
        }
        /* Before Linux 6.14 (its own process by PIDFD_SELF; 6.13: any
           advice for its own process): a call per run. */
        for (size_t i = done; i < done + count; i++)
            if (madvise(list->runs[i].iov_base, list->runs[i].iov_len, MADV_POPULATE_WRITE) == 0)
                pages += list->runs[i].iov_len / PAGE_BYTES;
    }
    return pages;
}
