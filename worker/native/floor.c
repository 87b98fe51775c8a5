/*
 * The floor of this design, for `pyclave bench`: fork, exit and wait, the
 * way the zygote forks its workers (from native code, no Python in between,
 * without atfork handlers, so only the fork's own copy-on-write faults
 * count, and the split of the zygote's huge pages every worker does first:
 * memory.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "native.h"

/* `count` rounds of fork, (split,) _exit(0) and waitpid; each round's microseconds
   go to `latencies_us`. Returns 0, or -1 (errno). */
int pyclave_fork_exit_wait(uint64_t count, uint64_t *latencies_us) {
    for (uint64_t i = 0; i < count; i++) {
        uint64_t started = pyclave_monotonic_us();
        pid_t pid = pyclave_fork_without_handlers();
        if (pid == -1)
            return -1;
        if (pid == 0) {
            pyclave_split_huge_pages(); /* what every worker does first */
            _exit(0);
        }
        int status;
        while (waitpid(pid, &status, 0) == -1) {
            if (errno != EINTR)
                return -1;
        }
        latencies_us[i] = pyclave_monotonic_us() - started;
    }
    return 0;
}
