/*
 * SIGSYS reporter for seccomp's SECCOMP_RET_TRAP.
 *
 * The worker installs this handler just before its seccomp filters. When a
 * filter refuses a syscall, the kernel raises SIGSYS with the syscall number
 * in si_syscall; the handler writes one framed `WorkerEvent { blocked_syscall
 * { number } }` (pyclave.worker.v1) to the worker's channel, then lets SIGSYS
 * kill the process. Only async-signal-safe calls are used.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "native.h"

static int report_fd = -1;

static void on_sigsys(int signo, siginfo_t *info, void *context) {
    (void)context;
    /* WorkerEvent field 4: BlockedSyscall, whose field 1 is the number. */
    uint8_t blocked[1 + PYCLAVE_VARINT_MAX_BYTES];
    size_t blocked_len = pyclave_put_varint_field(blocked, 1, (uint32_t)info->si_syscall);
    uint8_t frame[PYCLAVE_FRAME_HEADER_BYTES + 1 + PYCLAVE_VARINT_MAX_BYTES + sizeof blocked];
    size_t len = PYCLAVE_FRAME_HEADER_BYTES;
    len += pyclave_put_bytes_field(frame + len, 4, blocked, blocked_len);
    pyclave_put_frame_header(frame, (uint32_t)(len - PYCLAVE_FRAME_HEADER_BYTES));
    if (report_fd >= 0) {
        ssize_t written = write(report_fd, frame, len);
        (void)written;
    }
    /* SA_RESETHAND restored the default action and SA_NODEFER leaves SIGSYS
       unblocked, so this kills the process by SIGSYS... */
    raise(signo);
    /* ...except pid 1 of a pid namespace (which a worker is): it ignores the
       signals it sends itself. Refused again, the syscall makes the kernel
       force SIGSYS with the default action, which kills even pid 1. */
    syscall(info->si_syscall, 0, 0, 0, 0, 0, 0);
    _exit(128 + signo);
}

int pyclave_install_sigsys_reporter(int fd) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsys;
    action.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    report_fd = fd;
    return sigaction(SIGSYS, &action, NULL);
}
