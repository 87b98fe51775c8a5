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

static int report_fd = -1;

static size_t put_varint(uint8_t *out, uint32_t value) {
    size_t n = 0;
    while (value >= 0x80) {
        out[n++] = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    out[n++] = (uint8_t)value;
    return n;
}

static void on_sigsys(int signo, siginfo_t *info, void *context) {
    (void)context;
    uint8_t number[5];
    size_t number_len = put_varint(number, (uint32_t)info->si_syscall);

    uint8_t frame[16];
    size_t len = 4;
    frame[len++] = 0x22;                           /* WorkerEvent field 4, length-delimited */
    frame[len++] = (uint8_t)(1 + number_len);      /* BlockedSyscall length */
    frame[len++] = 0x08;                           /* BlockedSyscall field 1, varint */
    memcpy(frame + len, number, number_len);
    len += number_len;
    uint32_t body = (uint32_t)(len - 4);
    frame[0] = (uint8_t)(body >> 24);
    frame[1] = (uint8_t)(body >> 16);
    frame[2] = (uint8_t)(body >> 8);
    frame[3] = (uint8_t)body;
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
