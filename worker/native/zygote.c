/*
 * The zygote's serving loop. Once the zygote (worker/pyclave_worker/
 * zygote.py) has imported everything, prepared the plan and reported ready,
 * it calls `pyclave_serve`, and every spawn and every reap happens here: the
 * zygote runs no Python between forks. Python would write to pages the
 * zygote shares with its live workers and copy them (~200 per spawn, about
 * as much CPU as the fork itself).
 *
 * Each worker enters a network namespace no other live worker has. Those
 * namespaces are reused: when the zygote reaps a worker (pid 1 of its pid
 * namespace, reaped only after the kernel has killed and reaped every other
 * process in it), no process of that job is left in its network namespace,
 * and the namespace goes to the next worker if it is also empty: no socket
 * left in it (sockets can outlive their processes: passed to the supervisor
 * in a frame it never reads, or in flight in a cycle the kernel has not
 * collected yet). The zygote checks /proc/net/unix of the namespace, through
 * a file it opened inside it (jobs may create no other kind of socket); a
 * namespace with anything listed is closed, never reused. Creating and
 * tearing down a network namespace for every worker costs more CPU than
 * anything else in its confinement; an empty one holds nothing a job could
 * configure (`lo` stays down: the namespace belongs to the zygote's user
 * namespace, and jobs have no capabilities there).
 *
 * The protocol is pyclave.worker.v1 (proto/pyclave/v1/worker.proto):
 * `ZygoteCommand` frames in, `ZygoteEvent` frames out. A Spawn's fds (the
 * worker's channel, then `cgroup_fds` cgroup.procs files) arrive as
 * SCM_RIGHTS with the first byte of its frame (the worker makes its own
 * output and start pipes). A successful spawn
 * is not answered (the worker reports ready itself). Exits with status 0 (a
 * worker that reported its result, or was retired while idle) are held back
 * up to EXIT_HOLD_NS and sent together: they mostly hand a cgroup and a uid
 * back (the supervisor's uid pool is sized for the hold, src/sandbox/ids.rs;
 * only a job that exits cleanly without reporting waits, at most that long,
 * for its exit status), and every event the supervisor reads
 * wakes it (a context switch costs it more than the rest of its share of a
 * job). Any other exit, and a failed spawn, goes at once, with whatever is
 * held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "native.h"

/* The zygote.py limit on a command frame. */
#define MAX_COMMAND_BYTES (64 * 1024)
/* Fds a Spawn carries: the worker's channel, then its cgroups' procs files. */
#define FIXED_FDS_PER_SPAWN 1
#define MAX_FDS_PER_SPAWN 8
#define MAX_QUEUED_FDS (4 * MAX_FDS_PER_SPAWN)
#define MAX_ERROR_BYTES 512
/* Room for any one event frame. */
#define MAX_EVENT_BYTES (PYCLAVE_FRAME_HEADER_BYTES + 2 + PYCLAVE_VARINT_MAX_BYTES + MAX_ERROR_BYTES + 64)
#define EXIT_HOLD_NS (10 * 1000 * 1000L)

/* Field numbers (worker.proto). */
enum {
    COMMAND_SPAWN = 1,
    SPAWN_WORKER_ID = 1,
    SPAWN_UID = 2,
    SPAWN_GID = 3,
    SPAWN_CGROUP_FDS = 4,
    SPAWN_REHEARSAL = 5,
    SPAWN_TRANSFORM_PAGES = 6,
    EVENT_EXITED = 3,
    EVENT_SPAWN_FAILED = 4,
    SPAWN_FAILED_WORKER_ID = 1,
    SPAWN_FAILED_ERROR = 2,
    EXITED_PID = 1,
    EXITED_WAIT_STATUS = 2,
    EXITED_WORKER_ID = 3,
};

struct spawn_request {
    uint64_t worker_id;
    uint32_t uid;
    uint32_t gid;
    uint32_t cgroup_fds;
    uint32_t rehearsal;
    uint32_t transform_pages;
};

/* Bytes and fds read from the supervisor, not yet taken by a command. */
struct inbox {
    uint8_t bytes[2 * MAX_COMMAND_BYTES];
    size_t length;
    int fds[MAX_QUEUED_FDS];
    size_t fd_count;
};

/* A network namespace the zygote holds: the namespace, and its
   /proc/net/unix (opened inside it: it lists that namespace's sockets). */
struct network_namespace {
    int fd;
    int unix_sockets;
};

/* Without the namespaces layer. */
static const struct network_namespace NO_NETWORK_NAMESPACE = {-1, -1};

struct live_worker {
    pid_t pid;
    uint64_t worker_id;
    struct network_namespace network;
};

/* The live workers (orphans reaped as subreaper are not reported). */
struct worker_set {
    struct live_worker *workers;
    size_t count;
    size_t capacity;
};

/* Empty network namespaces no live worker is in. */
struct namespace_pool {
    struct network_namespace *namespaces;
    size_t count;
    size_t capacity;
};

/* Event frames not yet sent; `held_since` is when the oldest was queued. */
struct outbox {
    uint8_t bytes[16 * MAX_EVENT_BYTES];
    size_t length;
    struct timespec held_since;
};

struct server {
    const struct pyclave_plan *plan;
    int control;
    struct inbox inbox;
    struct outbox outbox;
    struct worker_set workers;
    struct namespace_pool network_namespaces;
    int home_network_namespace; /* the zygote's own */
    char *error;
    size_t error_size;
};

static int fail_with(struct server *server, const char *what) {
    snprintf(server->error, server->error_size, "%s: %s", what, strerror(errno));
    return -1;
}

static void on_sigchld(int signo) {
    (void)signo; /* only interrupts ppoll */
}

static int write_all(int fd, const uint8_t *data, size_t length) {
    while (length > 0) {
        ssize_t written = send(fd, data, length, MSG_NOSIGNAL);
        if (written == -1) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += written;
        length -= (size_t)written;
    }
    return 0;
}

/* Sends every queued event. */
static int flush_events(struct server *server) {
    struct outbox *outbox = &server->outbox;
    if (outbox->length == 0)
        return 0;
    if (write_all(server->control, outbox->bytes, outbox->length) == -1)
        return fail_with(server, "write to the supervisor");
    outbox->length = 0;
    return 0;
}

/* Queues a `ZygoteEvent` whose one field `event_field` holds `body`, and
   sends the queue unless the event may be held back. */
static int send_event(struct server *server, uint32_t event_field, const uint8_t *body, size_t body_length,
                      int hold) {
    struct outbox *outbox = &server->outbox;
    if (sizeof outbox->bytes - outbox->length < MAX_EVENT_BYTES && flush_events(server) == -1)
        return -1;
    if (outbox->length == 0)
        clock_gettime(CLOCK_MONOTONIC, &outbox->held_since);
    uint8_t *frame = outbox->bytes + outbox->length;
    size_t length = PYCLAVE_FRAME_HEADER_BYTES;
    length += pyclave_put_bytes_field(frame + length, event_field, body, body_length);
    pyclave_put_frame_header(frame, (uint32_t)(length - PYCLAVE_FRAME_HEADER_BYTES));
    outbox->length += length;
    return hold ? 0 : flush_events(server);
}

/* How long held events may still wait, as a ppoll timeout (NULL: none are
   held); 0 once they are due. */
static const struct timespec *hold_left(const struct server *server, struct timespec *left) {
    if (server->outbox.length == 0)
        return NULL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    const struct timespec *since = &server->outbox.held_since;
    int64_t waited = (int64_t)(now.tv_sec - since->tv_sec) * 1000000000 + (now.tv_nsec - since->tv_nsec);
    int64_t remaining = waited >= EXIT_HOLD_NS ? 0 : waited < 0 ? EXIT_HOLD_NS : EXIT_HOLD_NS - waited;
    *left = (struct timespec){.tv_sec = 0, .tv_nsec = (long)remaining};
    return left;
}

static int send_spawn_failed(struct server *server, uint64_t worker_id, const char *reason) {
    uint8_t body[1 + PYCLAVE_VARINT_MAX_BYTES + 1 + PYCLAVE_VARINT_MAX_BYTES + MAX_ERROR_BYTES];
    size_t reason_length = strnlen(reason, MAX_ERROR_BYTES);
    size_t length = pyclave_put_varint_field(body, SPAWN_FAILED_WORKER_ID, worker_id);
    length += pyclave_put_bytes_field(body + length, SPAWN_FAILED_ERROR, (const uint8_t *)reason, reason_length);
    return send_event(server, EVENT_SPAWN_FAILED, body, length, 0);
}

static int send_exited(struct server *server, const struct live_worker *worker, int wait_status) {
    uint8_t body[3 * (1 + PYCLAVE_VARINT_MAX_BYTES)];
    size_t length = pyclave_put_varint_field(body, EXITED_PID, (uint64_t)worker->pid);
    /* int32: negative values are sign-extended to ten bytes. */
    length += pyclave_put_varint_field(body + length, EXITED_WAIT_STATUS, (uint64_t)(int64_t)wait_status);
    length += pyclave_put_varint_field(body + length, EXITED_WORKER_ID, worker->worker_id);
    int clean = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
    return send_event(server, EVENT_EXITED, body, length, clean);
}

/* Grows `*items` (of `size` bytes each) to hold one more. The arrays live
   in mappings of their own, not on the malloc heap: once the heap is on a
   file (memory.c), a write there would have every fork after it copy the
   heap's page-table entries again, and malloc writes to chunks all over the
   heap. */
static int make_room(void **items, size_t size, size_t count, size_t *capacity) {
    if (count < *capacity)
        return 0;
    size_t grown = *capacity == 0 ? 256 : 2 * *capacity;
    void *moved = *capacity == 0
                      ? mmap(NULL, grown * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                      : mremap(*items, *capacity * size, grown * size, MREMAP_MAYMOVE);
    if (moved == MAP_FAILED)
        return -1;
    *items = moved;
    *capacity = grown;
    return 0;
}

static void release_room(void *items, size_t size, size_t capacity) {
    if (capacity > 0)
        munmap(items, capacity * size);
}

/* Forgets `pid` into `*worker`; returns whether it was a worker. */
static int forget_worker(struct server *server, pid_t pid, struct live_worker *worker) {
    struct worker_set *set = &server->workers;
    for (size_t i = 0; i < set->count; i++) {
        if (set->workers[i].pid == pid) {
            *worker = set->workers[i];
            set->workers[i] = set->workers[--set->count];
            return 1;
        }
    }
    return 0;
}

static void close_network_namespace(struct network_namespace network) {
    if (network.fd >= 0)
        close(network.fd);
    if (network.unix_sockets >= 0)
        close(network.unix_sockets);
}

/* Whether no socket is left in `network` (an unreadable list counts as not
   empty). */
static int holds_no_socket(struct network_namespace network) {
    char listing[256];
    ssize_t length = pread(network.unix_sockets, listing, sizeof listing, 0);
    if (length <= 0)
        return 0;
    /* Only the header line. */
    return memchr(listing, '\n', (size_t)length) == listing + length - 1;
}

/* Keeps a reaped worker's namespace for the next worker when it is empty
   (see the top of this file); closes it otherwise. */
static void return_network_namespace(struct server *server, struct network_namespace network) {
    struct namespace_pool *pool = &server->network_namespaces;
    if (network.fd < 0)
        return;
    if (!holds_no_socket(network) ||
        make_room((void **)&pool->namespaces, sizeof *pool->namespaces, pool->count, &pool->capacity) == -1) {
        close_network_namespace(network);
        return;
    }
    pool->namespaces[pool->count++] = network;
}

/* A network namespace for a new worker: a free one, or a new one (the
   zygote enters it, opens what it keeps, and goes back). Returns 0, -1
   when none can be had (the spawn fails), -2 when the zygote could not go
   back to its own. */
static int take_network_namespace(struct server *server, struct network_namespace *network) {
    struct namespace_pool *pool = &server->network_namespaces;
    if (pool->count > 0) {
        *network = pool->namespaces[--pool->count];
        return 0;
    }
    if (unshare(CLONE_NEWNET) == -1)
        return fail_with(server, "unshare(net)");
    *network = (struct network_namespace){
        .fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC),
        .unix_sockets = open("/proc/thread-self/net/unix", O_RDONLY | O_CLOEXEC),
    };
    int saved = errno;
    if (setns(server->home_network_namespace, CLONE_NEWNET) == -1) {
        close_network_namespace(*network);
        fail_with(server, "setns back to the zygote's network namespace");
        return -2;
    }
    if (network->fd == -1 || network->unix_sockets == -1) {
        close_network_namespace(*network);
        errno = saved;
        return fail_with(server, "open a new network namespace");
    }
    return 0;
}

/* Reaps every exited child, reporting the workers'. */
static int reap(struct server *server) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid == 0 || (pid == -1 && errno == ECHILD))
            return 0;
        if (pid == -1)
            return fail_with(server, "waitpid");
        struct live_worker worker;
        if (!forget_worker(server, pid, &worker))
            continue;
        /* Every process of the job is gone (see the top of this file). */
        return_network_namespace(server, worker.network);
        if (send_exited(server, &worker, status) == -1)
            return -1;
    }
}

/* Reads what the supervisor sent; returns 0 at its end of the channel. */
static int receive(struct server *server) {
    struct inbox *inbox = &server->inbox;
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(MAX_FDS_PER_SPAWN * sizeof(int))];
    } control;
    if (inbox->length == sizeof inbox->bytes) {
        errno = EMSGSIZE;
        return fail_with(server, "a command from the supervisor");
    }
    struct iovec vector = {inbox->bytes + inbox->length, sizeof inbox->bytes - inbox->length};
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control};
    ssize_t received = recvmsg(server->control, &message, MSG_CMSG_CLOEXEC);
    if (received == -1)
        return errno == EINTR ? 1 : fail_with(server, "read from the supervisor");
    int overflow = 0;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)CMSG_DATA(header);
        for (size_t i = 0; i < count; i++) {
            if (inbox->fd_count == MAX_QUEUED_FDS) {
                close(fds[i]); /* and every other one after it */
                overflow = 1;
            } else {
                inbox->fds[inbox->fd_count++] = fds[i];
            }
        }
    }
    if (overflow) {
        errno = EMFILE;
        return fail_with(server, "fds from the supervisor");
    }
    if (message.msg_flags & MSG_CTRUNC) {
        errno = EMSGSIZE;
        return fail_with(server, "fds from the supervisor");
    }
    inbox->length += (size_t)received;
    return received == 0 ? 0 : 1;
}

/* Takes the first `count` queued fds into `out` (or closes them when `out`
   is NULL); -1 if fewer arrived. */
static int take_fds(struct server *server, int *out, size_t count) {
    struct inbox *inbox = &server->inbox;
    if (count > inbox->fd_count) {
        errno = EPROTO;
        return fail_with(server, "a command announced fds that did not arrive");
    }
    for (size_t i = 0; i < count; i++) {
        if (out != NULL)
            out[i] = inbox->fds[i];
        else
            close(inbox->fds[i]);
    }
    inbox->fd_count -= count;
    memmove(inbox->fds, inbox->fds + count, inbox->fd_count * sizeof(int));
    return 0;
}

static int parse_spawn(const uint8_t *at, const uint8_t *end, struct spawn_request *spawn) {
    memset(spawn, 0, sizeof *spawn);
    while (at < end) {
        uint64_t key, value;
        if (pyclave_read_varint(&at, end, &key) == -1)
            return -1;
        uint32_t field = (uint32_t)(key >> 3), wire_type = (uint32_t)(key & 7);
        if (wire_type != PYCLAVE_WIRE_VARINT || field < SPAWN_WORKER_ID || field > SPAWN_TRANSFORM_PAGES) {
            if (pyclave_skip_field(&at, end, wire_type) == -1)
                return -1;
            continue;
        }
        if (pyclave_read_varint(&at, end, &value) == -1)
            return -1;
        switch (field) {
        case SPAWN_WORKER_ID:
            spawn->worker_id = value;
            break;
        case SPAWN_UID:
            spawn->uid = (uint32_t)value;
            break;
        case SPAWN_GID:
            spawn->gid = (uint32_t)value;
            break;
        case SPAWN_CGROUP_FDS:
            spawn->cgroup_fds = (uint32_t)value;
            break;
        case SPAWN_REHEARSAL:
            spawn->rehearsal = (uint32_t)value;
            break;
        case SPAWN_TRANSFORM_PAGES:
            spawn->transform_pages = value != 0;
            break;
        }
    }
    return 0;
}

/* Finds the Spawn in a ZygoteCommand; 1 if there is one, 0 for any other
   command, -1 if malformed. */
static int parse_command(const uint8_t *at, const uint8_t *end, struct spawn_request *spawn) {
    int found = 0;
    while (at < end) {
        uint64_t key, length;
        if (pyclave_read_varint(&at, end, &key) == -1)
            return -1;
        if (key != (COMMAND_SPAWN << 3 | PYCLAVE_WIRE_LENGTH_DELIMITED)) {
            if (pyclave_skip_field(&at, end, (uint32_t)(key & 7)) == -1)
                return -1;
            continue;
        }
        if (pyclave_read_varint(&at, end, &length) == -1 || length > (uint64_t)(end - at))
            return -1;
        if (parse_spawn(at, at + length, spawn) == -1)
            return -1;
        at += length;
        found = 1;
    }
    return found;
}

static void close_fds(const int *fds, size_t count) {
    for (size_t i = 0; i < count; i++)
        close(fds[i]);
}

/* Forks the worker `spawn` asks for. In the zygote: 1 once forked, or once
   a failed fork is reported; -1 if the supervisor cannot be told. In the
   worker: what `pyclave_fork_worker` returned there (0 or -2). */
static int spawn_worker(struct server *server, const struct spawn_request *spawn, const sigset_t *worker_mask,
                        struct pyclave_spawned *spawned) {
    int fds[MAX_FDS_PER_SPAWN];
    size_t count = FIXED_FDS_PER_SPAWN + (size_t)spawn->cgroup_fds;
    if (count > MAX_FDS_PER_SPAWN) {
        errno = EPROTO;
        return fail_with(server, "a spawn with too many cgroup fds");
    }
    if (take_fds(server, fds, count) == -1)
        return -1;
    struct network_namespace network = NO_NETWORK_NAMESPACE;
    int taken = server->plan->namespaces ? take_network_namespace(server, &network) : 0;
    if (taken < 0) {
        /* Reported before the worker's channel closes: the supervisor, seeing it
           closed, looks for the reason. */
        int reported = taken == -2 ? -1 : send_spawn_failed(server, spawn->worker_id, server->error);
        close_fds(fds, count);
        return reported == -1 ? -1 : 1;
    }
    /* Room for the worker before it exists: once forked, it must be known. */
    struct worker_set *set = &server->workers;
    if (make_room((void **)&set->workers, sizeof *set->workers, set->count, &set->capacity) == -1) {
        close_fds(fds, count);
        close_network_namespace(network);
        return fail_with(server, "remember a worker");
    }
    struct pyclave_worker worker = {
        .uid = spawn->uid,
        .gid = spawn->gid,
        .channel_fd = fds[0],
        .cgroup_fds = fds + FIXED_FDS_PER_SPAWN,
        .cgroup_fd_count = spawn->cgroup_fds,
        .network_namespace = network.fd,
        .transform_pages = (int32_t)spawn->transform_pages,
        .started_fd = -1,
        .supervisor_fds = {-1, -1, -1},
    };
    pid_t pid = pyclave_fork_worker(server->plan, &worker, server->error, server->error_size);
    if (pid == 0 || pid == -2) {
        /* The worker: SIGCHLD back to what Python expects. */
        signal(SIGCHLD, SIG_DFL);
        sigprocmask(SIG_SETMASK, worker_mask, NULL);
        spawned->channel_fd = worker.channel_fd;
        spawned->started_fd = worker.started_fd;
        memcpy(spawned->supervisor_fds, worker.supervisor_fds, sizeof worker.supervisor_fds);
        spawned->confinement_us = worker.confinement_us;
        spawned->pages_copied = worker.pages_copied;
        spawned->rehearsal = spawn->rehearsal;
        return pid;
    }
    if (pid == -1) {
        return_network_namespace(server, network);
        int reported = send_spawn_failed(server, spawn->worker_id, server->error);
        close_fds(fds, count);
        return reported == -1 ? -1 : 1;
    }
    close_fds(fds, count);
    set->workers[set->count++] = (struct live_worker){.pid = pid, .worker_id = spawn->worker_id, .network = network};
    return 1;
}

/* Runs every complete command in the inbox. 1 to go on; otherwise what
   `spawn_worker` returned in a worker, or -1. */
static int run_commands(struct server *server, const sigset_t *worker_mask, struct pyclave_spawned *spawned) {
    struct inbox *inbox = &server->inbox;
    size_t offset = 0;
    int result = 1;
    while (result == 1 && inbox->length - offset >= PYCLAVE_FRAME_HEADER_BYTES) {
        const uint8_t *header = inbox->bytes + offset;
        uint32_t length = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
        if (length > MAX_COMMAND_BYTES) {
            errno = EMSGSIZE;
            return fail_with(server, "a command from the supervisor");
        }
        if (inbox->length - offset < PYCLAVE_FRAME_HEADER_BYTES + length)
            break;
        const uint8_t *body = header + PYCLAVE_FRAME_HEADER_BYTES;
        offset += PYCLAVE_FRAME_HEADER_BYTES + length;
        struct spawn_request spawn;
        switch (parse_command(body, body + length, &spawn)) {
        case 1:
            result = spawn_worker(server, &spawn, worker_mask, spawned);
            break;
        case 0: /* nothing else is served once running; its fds are not ours */
            result = take_fds(server, NULL, server->inbox.fd_count) == -1 ? -1 : 1;
            break;
        default:
            errno = EPROTO;
            return fail_with(server, "a malformed command from the supervisor");
        }
    }
    if (result == 1) {
        inbox->length -= offset;
        memmove(inbox->bytes, inbox->bytes + offset, inbox->length);
    }
    return result;
}

/* The zygote's way out of `pyclave_serve`: `result`, with its fds closed. */
static int stop_serving(struct server *server, int result) {
    take_fds(server, NULL, server->inbox.fd_count);
    for (size_t i = 0; i < server->network_namespaces.count; i++)
        close_network_namespace(server->network_namespaces.namespaces[i]);
    if (server->home_network_namespace >= 0)
        close(server->home_network_namespace);
    release_room(server->network_namespaces.namespaces, sizeof *server->network_namespaces.namespaces,
                 server->network_namespaces.capacity);
    release_room(server->workers.workers, sizeof *server->workers.workers, server->workers.capacity);
    return result;
}

/*
 * Serves the supervisor on `control` until it closes the channel (returns
 * 1) or something fails (-1, "what: reason" in `error`). Returns 0 in each
 * new, confined worker (`spawned` says its channel, its start pipe and how
 * long confinement took) and -2 in a worker that could not confine itself (`error` says why;
 * it must report that on `spawned->channel_fd` and exit). Returns 2 first,
 * in each recorder (prefault.c): unconfined, it must run the path
 * `spawned->rehearsal` says, send the pages it copied to
 * `spawned->channel_fd` and exit.
 */
int pyclave_serve(const struct pyclave_plan *plan, int control, struct pyclave_spawned *spawned, char *error,
                  size_t error_size) {
    static struct server server; /* the inbox is too big for the stack */
    server = (struct server){
        .plan = plan, .control = control, .home_network_namespace = -1, .error = error, .error_size = error_size};
    /* Now, with no more Python to run here (memory.c); forks only get cheaper. */
    if (pyclave_move_library_data_to_files() == -1)
        fprintf(stderr, "pyclave zygote: moving libraries' data onto files: %s; workers fork without it\n",
                strerror(errno));
    if (pyclave_move_heaps_to_file() == -1)
        fprintf(stderr, "pyclave zygote: moving the heaps onto a file: %s; workers fork without it\n", strerror(errno));
    if (pyclave_learn_copied_pages(&spawned->channel_fd, &spawned->rehearsal) == 0)
        return 2; /* a recorder */
    if (plan->namespaces) {
        /* A network namespace of the zygote's own, first: it needs none of
           the host's, and it can come back to one its user namespace owns
           (rootless, it could not to the host's) after making a new one. */
        if (unshare(CLONE_NEWNET) == -1)
            return fail_with(&server, "unshare(net) for the zygote");
        server.home_network_namespace = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (server.home_network_namespace == -1)
            return fail_with(&server, "open the zygote's network namespace");
    }
    /* SIGCHLD stays blocked except inside ppoll: no exit goes unnoticed.
       SIGINT stays blocked throughout: Python's handler would only mark it
       pending for the interpreter, and every worker forked after would
       inherit the mark (CPython's after-fork hook that clears it is
       skipped) and die of KeyboardInterrupt. The workers get the mask the
       zygote had. */
    sigset_t worker_mask, blocked, while_waiting;
    struct sigaction action = {.sa_handler = on_sigchld};
    sigemptyset(&action.sa_mask);
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGCHLD);
    sigaddset(&blocked, SIGINT);
    if (sigprocmask(SIG_BLOCK, &blocked, &worker_mask) == -1 || sigaction(SIGCHLD, &action, NULL) == -1)
        return fail_with(&server, "SIGCHLD");
    while_waiting = worker_mask;
    sigaddset(&while_waiting, SIGINT);
    sigdelset(&while_waiting, SIGCHLD);

    for (;;) {
        struct pollfd control_poll = {.fd = control, .events = POLLIN};
        struct timespec left;
        if (ppoll(&control_poll, 1, hold_left(&server, &left), &while_waiting) == -1 && errno != EINTR)
            return stop_serving(&server, fail_with(&server, "ppoll"));
        if (reap(&server) == -1)
            return stop_serving(&server, -1);
        const struct timespec *held = hold_left(&server, &left);
        if (held != NULL && held->tv_nsec == 0 && flush_events(&server) == -1)
            return stop_serving(&server, -1);
        if (control_poll.revents & POLLNVAL) {
            errno = EBADF;
            return stop_serving(&server, fail_with(&server, "the control socket"));
        }
        if (!(control_poll.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        int received = receive(&server);
        if (received <= 0)
            return stop_serving(&server, received == 0 ? 1 : -1);
        int served = run_commands(&server, &worker_mask, spawned);
        if (served == 0 || served == -2)
            return served; /* in a worker: the zygote's bookkeeping is not its own */
        if (served == -1)
            return stop_serving(&server, -1);
    }
}
