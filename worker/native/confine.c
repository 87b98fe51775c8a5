/*
 * A worker's birth: the zygote's fork, and the worker's confinement before
 * anything else runs in it.
 *
 * The zygote (worker/pyclave_worker/confine.py) prepares everything once:
 * the read-only root in its own mount namespace, the paths, the rlimits and
 * the seccomp programs, laid out as a `struct pyclave_plan`. For each worker
 * it calls `pyclave_fork_worker`, which forks; the child confines itself
 * with nothing but syscalls and only then returns into Python. CPython's own
 * after-fork work (`os.fork`) is skipped: it copies ~250 of the zygote's
 * pages per worker, and it exists for threads a single-threaded zygote does
 * not have (the worker reseeds its random generators itself). The steps, in
 * order, and what each stops:
 *
 * 0. pid namespace (in the zygote)  the worker is pid 1 of its own: its processes see
 *                                 only each other and die with it
 * 1. join the job's cgroup        memory, CPU and pids limits cover everything after
 *    (then the pages a job's path writes are copied, prefault.c)
 * 2. namespaces                   no view of host mounts, network, IPC, hostname, cgroups;
 *                                 the network namespace is one no other live worker has
 * 3. minimal read-only root       no host files beyond Python and its libraries (the
 *                                 zygote's root, pyclave_switch_root); private capped
 *                                 tmpfs for /tmp and /dev/shm, a /proc of its own
 * 4. rlimits                      core dumps, huge files, fd and process floods
 * 5. fds                          nothing inherited but stdin and the channel; its own
 *                                 stdout, stderr and start pipes
 * 6. unprivileged uid, user ns    no root, no capabilities, nothing to regain them with
 * 7. seccomp                      no syscalls outside the reviewed allowlist: the zygote
 *                                 installed it, widened by the syscalls of the steps
 *                                 above; the first filter here takes those away
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "native.h"

#define NAMESPACES (CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)
#define HOSTNAME "pyclave"
/* NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE, each with its lock, and
   KEEP_CAPS locked off. */
#define SECUREBITS_LOCKED_DOWN (0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80)

struct failure {
    char *text;
    size_t size;
};

/* Records "what: strerror(errno)" and returns -1. */
static int fail(struct failure *failure, const char *what) {
    snprintf(failure->text, failure->size, "%s: %s", what, strerror(errno));
    return -1;
}

#define CHECK(call, what)                                                                                             \
    do {                                                                                                              \
        if ((call) == -1)                                                                                             \
            return fail(failure, what);                                                                               \
    } while (0)

static int write_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    size_t length = strlen(text);
    ssize_t written = write(fd, text, length);
    int saved = errno;
    close(fd);
    errno = saved;
    return written == (ssize_t)length ? 0 : -1;
}

/* Creates the directories leading to `path` (not `path` itself), 0755. */
static int make_parents(const char *path) {
    char partial[PATH_MAX];
    size_t length = strlen(path);
    if (length >= sizeof partial) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(partial, path, length + 1);
    for (char *slash = strchr(partial + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(partial, 0755) == -1 && errno != EEXIST)
            return -1;
        *slash = '/';
    }
    return 0;
}

static int make_tmp_entry(const struct pyclave_tmp_entry *entry) {
    struct stat existing;
    if (make_parents(entry->target) == -1)
        return -1;
    switch (entry->kind) {
    case PYCLAVE_SYMLINK:
        /* Inside a path bound before it, the link is there already. */
        if (lstat(entry->target, &existing) == 0)
            return 0;
        return symlink(entry->source, entry->target);
    case PYCLAVE_BIND_DIRECTORY:
        if (mkdir(entry->target, 0755) == -1 && errno != EEXIST)
            return -1;
        break;
    case PYCLAVE_BIND_FILE: {
        int fd = open(entry->target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd == -1 && errno != EROFS && errno != EEXIST)
            return -1;
        if (fd != -1)
            close(fd);
        break;
    }
    default:
        errno = EINVAL;
        return -1;
    }
    /* The zygote's path is a read-only bind: its copy is read-only too. */
    return mount(entry->source, entry->target, NULL, MS_BIND | MS_REC, NULL);
}

/* Private /tmp and /dev/shm, and a fresh /proc (which covers the
   zygote's), on the zygote's read-only root. With read-only paths under
   /tmp, the private /tmp is put together at /dev/shm first, where the
   zygote's /tmp (the binds' sources) is still visible, then moved over it. */
static int mount_private_dirs(const struct pyclave_plan *plan, struct failure *failure) {
    if (plan->tmp_entry_count == 0) {
        CHECK(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, plan->tmp_mount_options), "mount /tmp");
    } else {
        CHECK(mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, plan->tmp_mount_options), "mount /tmp");
        CHECK(chdir("/dev/shm"), "chdir to the private /tmp");
        for (uint64_t i = 0; i < plan->tmp_entry_count; i++)
            CHECK(make_tmp_entry(&plan->tmp_entries[i]), "bind a read-only path under /tmp");
        CHECK(chdir("/"), "chdir /");
        CHECK(mount("/dev/shm", "/tmp", NULL, MS_MOVE, NULL), "move the private /tmp");
    }
    CHECK(mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, plan->tmp_mount_options),
          "mount /dev/shm");
    CHECK(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount /proc");
    return 0;
}

/*
 * In the zygote, once, in its own mount namespace: the prepared root at
 * `root` becomes "/" (read-only) and the host's tree is gone from it. Each
 * worker's mount namespace is then a copy of this small tree, and no worker
 * detaches an old root of its own (a detach makes the kernel wait for an
 * RCU grace period, milliseconds under load, on the way to `ready`).
 * Returns 0, or -1 with "step: reason" in `error`.
 */
int pyclave_switch_root(const char *root, char *error, size_t error_size) {
    struct failure failure_record = {error, error_size};
    struct failure *failure = &failure_record;
    /* pivot_root(".", ".") stacks the old root on the new one; detaching the
       top of "/" then drops it, without a directory to park it in. */
    CHECK(chdir(root), "chdir to the new root");
    CHECK(syscall(SYS_pivot_root, ".", "."), "pivot_root");
    CHECK(umount2(".", MNT_DETACH), "umount the host's root");
    CHECK(chdir("/"), "chdir /");
    CHECK(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL), "read-only root");
    return 0;
}

/* The job's stdout and stderr pipes and its start pipe, made here rather
   than in the supervisor (whose one thread every job shares): the write
   ends become 1, 2 and `worker->started_fd`; the read ends, non-blocking
   (the worker's writes block), go to the supervisor with `ready`. */
static int make_job_pipes(struct pyclave_worker *worker, struct failure *failure) {
    int output[2][2], started[2];
    for (int stream = 0; stream < 2; stream++) {
        CHECK(pipe2(output[stream], O_CLOEXEC), "output pipe");
        CHECK(fcntl(output[stream][0], F_SETFL, O_NONBLOCK), "output pipe non-blocking");
        CHECK(dup2(output[stream][1], 1 + stream), "stdout or stderr");
        close(output[stream][1]);
    }
    CHECK(pipe2(started, O_CLOEXEC | O_NONBLOCK), "start pipe");
    worker->started_fd = started[1];
    worker->supervisor_fds[0] = output[0][0];
    worker->supervisor_fds[1] = output[1][0];
    worker->supervisor_fds[2] = started[0];
    return 0;
}

/* Keeps 0, 1, 2 and the `count` fds in `keep` (all above 2; sorted here). */
static int close_all_but(int *keep, size_t count, struct failure *failure) {
    for (size_t i = 0; i < count; i++)
        if (keep[i] <= 2) {
            /* The zygote keeps 0, 1 and 2 open: new fds are never below 3. */
            errno = EBADF;
            return fail(failure, "an fd to keep below 3");
        }
    for (size_t i = 1; i < count; i++)
        for (size_t j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int swapped = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = swapped;
        }
    unsigned int next = 3;
    for (size_t i = 0; i < count; i++) {
        if ((unsigned int)keep[i] > next)
            CHECK(syscall(SYS_close_range, next, keep[i] - 1, 0), "close inherited fds");
        next = (unsigned int)keep[i] + 1;
    }
    CHECK(syscall(SYS_close_range, next, ~0U, 0), "close inherited fds");
    return 0;
}

/* Keeps 0, 1, 2 (stdout and stderr now the job's pipes), the channel and
   the start pipe, which no exec'd program may inherit, and the read ends
   for the supervisor until `ready` takes them. */
static int keep_only_job_fds(struct pyclave_worker *worker, struct failure *failure) {
    if (make_job_pipes(worker, failure) == -1)
        return -1;
    CHECK(fcntl(worker->channel_fd, F_SETFD, FD_CLOEXEC), "channel close-on-exec");
    int keep[2 + PYCLAVE_SUPERVISOR_FDS] = {worker->channel_fd, worker->started_fd};
    memcpy(keep + 2, worker->supervisor_fds, sizeof worker->supervisor_fds);
    return close_all_but(keep, sizeof keep / sizeof keep[0], failure);
}

/* Bounding set (every capability the kernel has: it answers EINVAL past the
   last) and ambient set, emptied. */
static int drop_bounding_and_ambient(struct failure *failure) {
    for (int cap = 0;; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1) {
            if (errno == EINVAL && cap > 0)
                break;
            return fail(failure, "drop a capability from the bounding set");
        }
    }
    CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities");
    return 0;
}

static int drop_privileges(const struct pyclave_plan *plan, const struct pyclave_worker *worker,
                           struct failure *failure) {
    if (worker->uid == 0 || worker->gid == 0) {
        errno = EPERM;
        return fail(failure, "refusing to run a job as uid or gid 0");
    }
    if (drop_bounding_and_ambient(failure) == -1)
        return -1;
    CHECK(setgroups(0, NULL), "setgroups");
    CHECK(setresgid(worker->gid, worker->gid, worker->gid), "setresgid");
    /* From root: the permitted and effective sets are emptied. */
    CHECK(setresuid(worker->uid, worker->uid, worker->uid), "setresuid");
    if (plan->namespaces) {
        /* Dumpable only while we write our own id maps (the uid change made
           /proc/self root-owned); the same ids inside as outside, never 0. */
        char map[64];
        CHECK(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable");
        CHECK(unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)");
        CHECK(write_text("/proc/self/setgroups", "deny"), "setgroups deny");
        snprintf(map, sizeof map, "%u %u 1", worker->uid, worker->uid);
        CHECK(write_text("/proc/self/uid_map", map), "uid_map");
        snprintf(map, sizeof map, "%u %u 1", worker->gid, worker->gid);
        CHECK(write_text("/proc/self/gid_map", map), "gid_map");
        CHECK(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "not dumpable");
        /* The new namespace handed out a full capability set: drop it for good. */
        if (drop_bounding_and_ambient(failure) == -1)
            return -1;
        CHECK(prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_DOWN, 0, 0, 0), "securebits");
    }
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof data);
    CHECK(syscall(SYS_capset, &header, data), "capset");
    return 0;
}

static int confine(const struct pyclave_plan *plan, struct pyclave_worker *worker, struct failure *failure) {
    CHECK(prctl(PR_SET_NAME, "pyclave-worker", 0, 0, 0), "process name");
    for (uint64_t i = 0; i < worker->cgroup_fd_count; i++) {
        /* "0" moves the writing process. */
        CHECK(write(worker->cgroup_fds[i], "0", 1) == 1 ? 0 : -1, "join the job's cgroup");
        close(worker->cgroup_fds[i]);
    }
    /* In the job's cgroup, which the copies are charged to. */
    worker->pages_copied = pyclave_copy_learnt_pages(worker->transform_pages);
    if (plan->namespaces) {
        CHECK(setns(worker->network_namespace, CLONE_NEWNET), "setns(net)");
        close(worker->network_namespace);
        CHECK(unshare(NAMESPACES), "unshare(mount, ipc, uts, cgroup)");
        CHECK(sethostname(HOSTNAME, strlen(HOSTNAME)), "sethostname");
    }
    if (plan->minimal_root && mount_private_dirs(plan, failure) == -1)
        return -1;
    for (uint64_t i = 0; i < plan->rlimit_count; i++) {
        struct rlimit limit = {plan->rlimits[i].soft, plan->rlimits[i].hard};
        CHECK(setrlimit(plan->rlimits[i].resource, &limit), "setrlimit");
    }
    if (keep_only_job_fds(worker, failure) == -1)
        return -1;
    if (plan->drop_privileges && drop_privileges(plan, worker, failure) == -1)
        return -1;
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
    if (plan->filter_count > 0) {
        CHECK(pyclave_install_sigsys_reporter(worker->channel_fd), "SIGSYS reporter");
        for (uint64_t i = 0; i < plan->filter_count; i++)
            CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &plan->filters[i], 0, 0), "seccomp");
    }
    return 0;
}

/* Fresh words from the kernel, and the position at the end: the next draw
   runs the generator over them. Each worker would otherwise repeat the
   zygote's stream. */
static int reseed_mt19937(struct mt19937_state *state) {
    size_t done = 0;
    while (done < sizeof state->key) {
        ssize_t got = getrandom((char *)state->key + done, sizeof state->key - done, 0);
        if (got == -1 && errno != EINTR)
            return -1;
        if (got > 0)
            done += (size_t)got;
    }
    state->pos = MT19937_WORDS;
    return 0;
}

uint64_t pyclave_monotonic_us(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

/* Nested: without glibc, __GLIBC_PREREQ is no macro an #if could expand. */
#if defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 34)
#define HAVE_FORK_WITHOUT_HANDLERS 1
#endif
#endif

/*
 * fork() without the atfork handlers. fork() runs those the libraries
 * registered (jemalloc's and Arrow's in libarrow, OpenSSL's) and, in a
 * process that ever had a thread, takes glibc's malloc and stdio locks
 * around the fork: ~25 writes per fork to memory the zygote shares with
 * its live workers, each a copy-on-write fault in the zygote, and as many
 * again in the worker. They exist to make locks and thread pools
 * consistent across threads, and the zygote has none when it forks (it
 * checks that it is single-threaded before it serves, and its serving loop,
 * zygote.c, must never start one): no lock can be held and no pool has
 * workers. The worker reseeds what needs reseeding itself
 * (OpenSSL does on its own when it sees a new pid).
 */
pid_t pyclave_fork_without_handlers(void) {
#ifdef HAVE_FORK_WITHOUT_HANDLERS
    return _Fork();
#else
    return fork();
#endif
}

/*
 * In the zygote: returns the worker's pid, or -1 with "step: reason" in
 * `error` when it cannot fork. In the worker: returns 0 once it is confined
 * (`worker->confinement_us` says how long that took), or -2 with the reason
 * in `error`; the worker must then report it and exit without serving a job.
 */
pid_t pyclave_fork_worker(const struct pyclave_plan *plan, struct pyclave_worker *worker, char *error,
                          size_t error_size) {
    struct failure failure_record = {error, error_size};
    struct failure *failure = &failure_record;
    if (plan->namespaces) {
        /* unshare(CLONE_NEWPID) works only while our children would still be
           born in our own namespace: go back to it first. */
        CHECK(setns(plan->own_pid_namespace, CLONE_NEWPID), "setns(pid)");
        CHECK(unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)");
    }
    pid_t pid = pyclave_fork_without_handlers();
    if (pid == -1)
        return fail(failure, "fork");
    if (pid > 0)
        return pid;
    uint64_t started = pyclave_monotonic_us();
    if (confine(plan, worker, failure) == -1)
        return -2;
    if (plan->numpy_random_state != NULL && reseed_mt19937(plan->numpy_random_state) == -1) {
        fail(failure, "reseed numpy's random generator");
        return -2;
    }
    worker->confinement_us = pyclave_monotonic_us() - started;
    return 0;
}

/* pyclave.worker.v1 field numbers this file writes. */
enum {
    WORKER_EVENT_READY = 1,
    WORKER_READY_CONFINEMENT_US = 1,
    WORKER_READY_PROCESS_CPU_US = 2,
    WORKER_READY_PAGES_COPIED = 3
};

/*
 * In a worker once it has rehearsed: sends `WorkerEvent { ready {
 * confinement_us, process_cpu_us, pages_copied } }` on its channel with the read ends of its pipes
 * (SCM_RIGHTS, with the frame's first byte), then closes them here. Native
 * rather than Python: the dozen objects Python allocated for it (the
 * ancillary data, an array, a control buffer) each landed on a page shared
 * with the zygote, ~45 copy-on-write faults per worker. Returns 0, or -1
 * (errno).
 */
int pyclave_report_ready(const struct pyclave_spawned *spawned) {
    struct timespec cpu;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu) == -1)
        return -1;
    uint64_t process_cpu_us = (uint64_t)cpu.tv_sec * 1000000 + (uint64_t)cpu.tv_nsec / 1000;
    uint8_t ready[3 * (1 + PYCLAVE_VARINT_MAX_BYTES)];
    size_t ready_length = pyclave_put_varint_field(ready, WORKER_READY_CONFINEMENT_US, spawned->confinement_us);
    ready_length += pyclave_put_varint_field(ready + ready_length, WORKER_READY_PROCESS_CPU_US, process_cpu_us);
    ready_length += pyclave_put_varint_field(ready + ready_length, WORKER_READY_PAGES_COPIED, spawned->pages_copied);
    uint8_t frame[PYCLAVE_FRAME_HEADER_BYTES + 1 + PYCLAVE_VARINT_MAX_BYTES + sizeof ready];
    size_t length = PYCLAVE_FRAME_HEADER_BYTES;
    length += pyclave_put_bytes_field(frame + length, WORKER_EVENT_READY, ready, ready_length);
    pyclave_put_frame_header(frame, (uint32_t)(length - PYCLAVE_FRAME_HEADER_BYTES));

    union {
        char space[CMSG_SPACE(sizeof spawned->supervisor_fds)];
        struct cmsghdr aligned;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec data = {frame, length};
    struct msghdr message = {
        .msg_iov = &data, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
    struct cmsghdr *rights = CMSG_FIRSTHDR(&message);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(sizeof spawned->supervisor_fds);
    memcpy(CMSG_DATA(rights), spawned->supervisor_fds, sizeof spawned->supervisor_fds);
    ssize_t sent;
    do
        sent = sendmsg(spawned->channel_fd, &message, MSG_NOSIGNAL);
    while (sent == -1 && errno == EINTR);
    /* A blocking stream socket takes the few bytes whole, or fails. */
    int result = sent == (ssize_t)length ? 0 : -1;
    if (sent >= 0 && result == -1)
        errno = EPROTO;
    int saved = errno;
    for (int i = 0; i < PYCLAVE_SUPERVISOR_FDS; i++)
        close(spawned->supervisor_fds[i]);
    errno = saved;
    return result;
}
