/* Opening a FIFO waits for its other end, as on Linux: ENXIO for a non-blocking
   writer alone, EINTR for a signal, SA_RESTART goes on waiting. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char *fifo;
static int alarms;
static void on_alarm(int sig) { (void)sig; alarms++; }

static void show(const char *what, int r) {
    printf("%-36s %s\n", what, r < 0 ? strerrorname_np(errno) : "ok");
    fflush(stdout);
}

/* A child that opens the FIFO with `flags` after `ms`, writes or reads, and exits. */
static pid_t partner(int flags, int ms, int linger_ms) {
    pid_t pid = fork();
    if (pid == 0) {
        usleep(ms * 1000);
        int fd = open(fifo, flags);
        if ((flags & O_ACCMODE) == O_WRONLY) write(fd, "hi\n", 3);
        usleep(linger_ms * 1000);
        _exit(fd < 0);
    }
    return pid;
}

static void reap(pid_t pid) {
    int st;
    waitpid(pid, &st, 0);
    printf("partner status %d\n", st);
}

static void on(int sig, int flags) {
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = flags};
    sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
    (void)argc;
    fifo = argv[1];
    signal(SIGPIPE, SIG_IGN);
    char buf[16];

    show("nonblocking writer alone", open(fifo, O_WRONLY | O_NONBLOCK));
    int fd = open(fifo, O_RDONLY | O_NONBLOCK);
    show("nonblocking reader alone", fd);
    printf("read with no writer %zd\n", read(fd, buf, sizeof buf));
    close(fd);
    fd = open(fifo, O_RDWR);
    show("O_RDWR alone", fd);
    close(fd);

    pid_t pid = partner(O_RDONLY, 50, 100);
    fd = open(fifo, O_WRONLY);
    show("writer waits for a reader", fd);
    printf("wrote %zd\n", write(fd, "x", 1));
    close(fd);
    reap(pid);

    pid = partner(O_WRONLY, 50, 0);
    fd = open(fifo, O_RDONLY);
    show("reader waits for a writer", fd);
    ssize_t n = read(fd, buf, sizeof buf);
    printf("read %.*s", (int)n, buf);
    printf("then %zd\n", read(fd, buf, sizeof buf));
    close(fd);
    reap(pid);

    /* The reader opens and leaves at once: the waiting writer goes on all the same. */
    pid = partner(O_RDONLY | O_NONBLOCK, 50, 0);
    fd = open(fifo, O_WRONLY);
    show("writer whose reader left", fd);
    reap(pid);
    show("its write", write(fd, "x", 1));
    close(fd);

    on(SIGALRM, 0);
    ualarm(50000, 0);
    show("writer cut short by a signal", open(fifo, O_WRONLY));
    ualarm(50000, 0);
    show("reader cut short by a signal", open(fifo, O_RDONLY));
    printf("alarms %d\n", alarms);

    on(SIGALRM, SA_RESTART);
    pid = partner(O_RDONLY, 150, 50);
    ualarm(50000, 0);
    fd = open(fifo, O_WRONLY);
    show("SA_RESTART writer", fd);
    close(fd);
    reap(pid);
    pid = partner(O_WRONLY, 150, 0);
    ualarm(50000, 0);
    fd = open(fifo, O_RDONLY);
    show("SA_RESTART reader", fd);
    n = read(fd, buf, sizeof buf);
    printf("read %.*s", (int)n, buf);
    close(fd);
    reap(pid);
    printf("alarms %d\n", alarms);
    return 0;
}
