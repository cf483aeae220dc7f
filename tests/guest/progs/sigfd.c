/* signalfd: records of pending signals, poll readiness, blocking reads, errors.
 * Nothing printed depends on pids or timing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t child;

static void show(const struct signalfd_siginfo *s)
{
    const char *who = s->ssi_pid == (unsigned)getpid() ? "self" : s->ssi_pid == (unsigned)child ? "child" : "other";
    if (s->ssi_signo >= (unsigned)SIGRTMIN)
        printf("  RTMIN+%u", s->ssi_signo - SIGRTMIN);
    else
        printf("  %s", sigabbrev_np(s->ssi_signo));
    printf(" code=%d pid=%s uid-ok=%d int=%d ptr=%llu status=%d\n", s->ssi_code, who, s->ssi_uid == getuid(),
           s->ssi_int, (unsigned long long)s->ssi_ptr, s->ssi_status);
}

static int readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, ms);
    return n == 1 && (p.revents & POLLIN);
}

#define SHOW(what, call)                                                                                     \
    do {                                                                                                      \
        long rc_ = (call);                                                                                    \
        printf("%s: %ld %s\n", what, rc_, rc_ < 0 ? strerrorname_np(errno) : "");                             \
    } while (0)

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGRTMIN);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, NULL);
    int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    printf("flags: nonblock=%d cloexec=%d\n", !!(fcntl(fd, F_GETFL) & O_NONBLOCK), !!(fcntl(fd, F_GETFD) & FD_CLOEXEC));
    struct signalfd_siginfo recs[8];
    printf("readable with nothing pending: %d\n", readable(fd, 0));
    SHOW("read with nothing pending", read(fd, recs, sizeof recs));

    for (int i = 1; i <= 3; i++) {
        union sigval v = {.sival_int = i * 10};
        sigqueue(getpid(), SIGRTMIN, v);
    }
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR2); /* not in the mask: stays pending */
    printf("readable: %d\n", readable(fd, 0));
    SHOW("read too short", read(fd, recs, sizeof recs[0] - 1));
    ssize_t n = read(fd, recs, 3 * sizeof recs[0]);
    printf("read 3 records: %zd bytes\n", n);
    for (int i = 0; i < n / (ssize_t)sizeof recs[0]; i++)
        show(&recs[i]);
    n = read(fd, recs, sizeof recs);
    printf("then %zd bytes\n", n);
    for (int i = 0; i < n / (ssize_t)sizeof recs[0]; i++)
        show(&recs[i]);
    printf("readable after: %d\n", readable(fd, 0));
    sigset_t pend;
    sigpending(&pend);
    printf("USR2 still pending: %d, USR1: %d\n", sigismember(&pend, SIGUSR2), sigismember(&pend, SIGUSR1));

    /* A child's exit, read blocking (a new mask on the same descriptor, blocking now). */
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    SHOW("new mask", signalfd(fd, &chld, 0) == fd);
    child = fork();
    if (child == 0) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        _exit(3);
    }
    n = read(fd, recs, sizeof recs);
    printf("blocking read: %zd bytes\n", n);
    show(&recs[0]);
    waitpid(child, NULL, 0);

    /* poll waits until a signal comes. */
    child = fork();
    if (child == 0) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        _exit(0);
    }
    printf("poll woken by the exit: %d\n", readable(fd, 5000));
    n = read(fd, recs, sizeof recs);
    printf("then read %zd bytes\n", n);
    waitpid(child, NULL, 0);
    printf("poll with nothing: %d\n", readable(fd, 100));

    /* Errors. */
    SHOW("bad flags", signalfd(-1, &mask, 1));
    SHOW("bad size", syscall(SYS_signalfd4, -1, &mask, 4, 0));
    SHOW("bad mask", syscall(SYS_signalfd4, -1, (void *)8, 8, 0));
    SHOW("not a signalfd", signalfd(1, &mask, 0));
    SHOW("bad fd", signalfd(99, &mask, 0));
    SHOW("write", write(fd, recs, sizeof recs[0]));
    SHOW("lseek", lseek(fd, 0, SEEK_SET));
    void *volatile bad = (void *)8;
    kill(getpid(), SIGCHLD); /* taken, then lost with the bad buffer */
    SHOW("bad buffer", read(fd, bad, sizeof recs[0]));
    sigpending(&pend);
    printf("then SIGCHLD pending: %d\n", sigismember(&pend, SIGCHLD));
    SHOW("close", close(fd));
    return 0;
}
