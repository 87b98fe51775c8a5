/*
 * The floor of this design, for `pyclave bench`: fork, exit and wait, the
 * way the zygote forks its workers (from native code, no Python in between,
 * without atfork handlers, its libraries' data and its heaps on files first
 * as the zygote's are: mappings.c, memory.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "native.h"

/* `count` rounds of fork, _exit(0) and waitpid; each round's microseconds
   go to `latencies_us`. Returns 0, or -1 (errno). */
int pyclave_fork_exit_wait(uint64_t count, uint64_t *latencies_us) {
    if (pyclave_move_library_data_to_files() == -1 || pyclave_move_heaps_to_file() == -1)
        return -1;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t started = pyclave_monotonic_us();
        pid_t pid = pyclave_fork_without_handlers();
        if (pid == -1)
            return -1;
        if (pid == 0)
            _exit(0);
        int status;
        while (waitpid(pid, &status, 0) == -1) {
            if (errno != EINTR)
                return -1;
        }
        latencies_us[i] = pyclave_monotonic_us() - started;
    }
    return 0;
}
