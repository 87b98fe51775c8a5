/*
 * The worker runtime's native part, shared between its files:
 * zygote.c (the zygote's serving loop), confine.c (fork and confinement),
 * sigsys.c (the SIGSYS reporter), protobuf.c (the little of the wire format
 * they write and read by hand), memory.c (the zygote's heaps on a file),
 * mappings.c (fewer mappings in the zygote), prefault.c (the pages every
 * worker writes, copied in one go) and floor.c (the benchmark's fork floor).
 */
#ifndef PYCLAVE_NATIVE_H
#define PYCLAVE_NATIVE_H

#include <linux/filter.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* sigsys.c */
int pyclave_install_sigsys_reporter(int fd);

/* What a worker's private /tmp needs from the zygote's. */
enum pyclave_tmp_entry_kind { PYCLAVE_BIND_DIRECTORY = 0, PYCLAVE_BIND_FILE = 1, PYCLAVE_SYMLINK = 2 };

/* A read-only path under /tmp: the private /tmp covers the zygote's, so
   each worker binds `source` (the zygote's) again at `target`, relative to
   its private /tmp (or, for a symlink, recreates it: `source` is then the
   link's text). */
struct pyclave_tmp_entry {
    int32_t kind;
    const char *source;
    const char *target;
};

struct pyclave_rlimit {
    uint32_t resource;
    uint64_t soft;
    uint64_t hard;
};

/* numpy's MT19937 state (numpy/random/src/mt19937/mt19937.h); the zygote
   checks this layout against numpy's own view before it passes one. */
#define MT19937_WORDS 624
struct mt19937_state {
    uint32_t key[MT19937_WORDS];
    int pos;
};

/* Laid out by the zygote once; every worker reads it. */
struct pyclave_plan {
    int32_t namespaces;
    int32_t own_pid_namespace; /* the zygote's, open: each worker gets a new one inside it */
    int32_t minimal_root;
    int32_t drop_privileges;
    const char *tmp_mount_options;
    const struct pyclave_tmp_entry *tmp_entries;
    uint64_t tmp_entry_count;
    const struct pyclave_rlimit *rlimits;
    uint64_t rlimit_count;
    const struct sock_fprog *filters;
    uint64_t filter_count;
    struct mt19937_state *numpy_random_state; /* numpy's global generator, or NULL */
};

/* Pipes a worker makes for the supervisor: stdout, stderr, start. */
#define PYCLAVE_SUPERVISOR_FDS 3

/* This worker's own part. */
struct pyclave_worker {
    uint32_t uid;
    uint32_t gid;
    int32_t channel_fd;
    const int32_t *cgroup_fds;
    uint64_t cgroup_fd_count;
    /* The network namespace to enter: no other live worker's. */
    int32_t network_namespace;
    /* It copies the pages a transform's path writes too (prefault.c). */
    int32_t transform_pages;
    /* Set in the worker: */
    uint64_t confinement_us; /* how long its confinement took */
    uint64_t pages_copied;   /* prefault.c */
    int32_t started_fd;      /* the start pipe: one byte once the job reached the worker */
    /* The read ends of its stdout, stderr and start pipes, for the supervisor
       (they go with `ready`, and are closed here then). */
    int32_t supervisor_fds[PYCLAVE_SUPERVISOR_FDS];
};

/* confine.c: in the zygote, returns the worker's pid, or -1 with
   "step: reason" in `error`; in the worker, 0 once it is confined, or -2
   with the reason in `error`. */
pid_t pyclave_fork_worker(const struct pyclave_plan *plan, struct pyclave_worker *worker, char *error,
                          size_t error_size);
/* confine.c: fork() without the atfork handlers, for a single-threaded process. */
pid_t pyclave_fork_without_handlers(void);
/* confine.c: CLOCK_MONOTONIC in microseconds. */
uint64_t pyclave_monotonic_us(void);

/* zygote.c: what a new worker needs to go on in Python. */
struct pyclave_spawned {
    int32_t channel_fd;
    int32_t started_fd;
    uint64_t confinement_us;
    uint32_t rehearsal; /* pyclave.worker.v1.Rehearsal */
    int32_t supervisor_fds[PYCLAVE_SUPERVISOR_FDS];
    uint64_t pages_copied;
};
/* confine.c, in a worker once it has rehearsed: `ready` on its channel,
   with the read ends of its pipes (closed here then); 0, or -1 (errno). */
int pyclave_report_ready(const struct pyclave_spawned *spawned);
/* In the zygote, once: the prepared root at `root` becomes its read-only "/". */
int pyclave_switch_root(const char *root, char *error, size_t error_size);
int pyclave_serve(const struct pyclave_plan *plan, int control, struct pyclave_spawned *spawned, char *error,
                  size_t error_size);

/* floor.c */
int pyclave_fork_exit_wait(uint64_t count, uint64_t *latencies_us);

/* memory.c: CPython's object arenas from one region from now on (call
   before the big imports; a no-op when they already are); 0, or -1 (errno). */
int pyclave_use_arena_region(void);
/* memory.c: huge pages off for the process and its children, then the
   malloc heap and the arena region onto a file (once); bytes moved, or -1
   (errno). */
int64_t pyclave_move_heaps_to_file(void);
/* memory.c: `[start, end)`, which must be one private writable mapping,
   becomes a private mapping of a sealed memfd called `name` holding its
   current bytes; 0, or -1 (errno). Nothing may write to it meanwhile. */
int pyclave_move_onto_file(uintptr_t start, uintptr_t end, const char *name);
/* The page size of x86-64 and of every page the zygote moves. */
#define PAGE_BYTES 4096UL
/* The memfds the zygote's memory moves onto (memory.c, mappings.c) are
   named with this prefix, which prefault.c looks for. */
#define PYCLAVE_ZYGOTE_FILE_PREFIX "pyclave-zygote-"

/* mappings.c: merges the read-only segments of loaded libraries into their
   neighbours; the process's mapping count after (0 if it cannot be read
   again), or -1 (errno) when the mappings cannot be read at all. */
int64_t pyclave_merge_library_mappings(void);
/* mappings.c: the data segment of every loaded library, with its bss,
   onto a file of its own (once, after the merge); bytes moved, or -1 (errno) when the
   mappings cannot be read. */
int64_t pyclave_move_library_data_to_files(void);

/* protobuf.c: a frame is a 4-byte big-endian length, then one message. */
#define PYCLAVE_FRAME_HEADER_BYTES 4
#define PYCLAVE_VARINT_MAX_BYTES 10

enum pyclave_wire_type {
    PYCLAVE_WIRE_VARINT = 0,
    PYCLAVE_WIRE_FIXED64 = 1,
    PYCLAVE_WIRE_LENGTH_DELIMITED = 2,
    PYCLAVE_WIRE_FIXED32 = 5,
};

/* Writes `value` as a varint at `out`; returns the bytes written. */
size_t pyclave_put_varint(uint8_t *out, uint64_t value);
/* Reads a varint from [*at, end), advancing *at; -1 if malformed. */
int pyclave_read_varint(const uint8_t **at, const uint8_t *end, uint64_t *value);
/* Skips a field's value of `wire_type` in [*at, end); -1 if malformed. */
int pyclave_skip_field(const uint8_t **at, const uint8_t *end, uint32_t wire_type);
/* Writes field `field` as a varint at `out`; returns the bytes written. */
size_t pyclave_put_varint_field(uint8_t *out, uint32_t field, uint64_t value);
/* Writes field `field` as `length` bytes (a string or a message) at `out`;
   returns the bytes written (at most 1 + PYCLAVE_VARINT_MAX_BYTES + length). */
size_t pyclave_put_bytes_field(uint8_t *out, uint32_t field, const uint8_t *bytes, size_t length);
/* Writes the frame header for a `length`-byte message at `out`. */
void pyclave_put_frame_header(uint8_t *out, uint32_t length);

/* pyclave.worker.v1.Rehearsal: what a worker (or a recorder) runs on itself. */
#define PYCLAVE_REHEARSAL_EXEC 0
#define PYCLAVE_REHEARSAL_EXEC_AND_TRANSFORM 1
/* prefault.c, in the zygote once, when it starts serving: forks a recorder
   per path, a trivial job's and a transform's, each running its path
   (returns 0 there, with `*recorder_fd` where its pages go and `*rehearsal`
   the path to run), and learns from them which pages workers copy (returns
   1, also when it could not: the reason is on stderr). */
int pyclave_learn_copied_pages(int *recorder_fd, uint32_t *rehearsal);
/* prefault.c, in the recorder once it has run the path: sends the runs of
   pages it copied from the zygote's files to `fd`; 0, or -1 (errno). */
int pyclave_record_copied_pages(int fd);
/* prefault.c, in each worker: copies the learnt pages of a trivial job's
   path, or of a transform's when `transform`, now; returns how many it
   copied. */
uint64_t pyclave_copy_learnt_pages(int transform);

#endif
