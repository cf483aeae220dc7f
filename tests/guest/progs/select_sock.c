/* select and pselect6 on sockets and pipes: readiness, timeouts (and the time
 * left written back), a peer's data arriving while waiting, bad arguments. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void result(const char *what, long r) {
    printf("%-36s %ld %s\n", what, r, r < 0 ? strerrorname_np(errno) : "");
}

static void show(const char *name, fd_set *set, int n) {
    printf("  %s:", name);
    for (int fd = 0; fd < n; fd++)
        if (FD_ISSET(fd, set)) printf(" %d", fd);
    printf("\n");
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int sv[2], p[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pipe(p);
    fd_set r, w, e;
    struct timeval tv = {0, 0};
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&e);
    FD_SET(sv[0], &r);
    FD_SET(p[0], &r);
    FD_SET(sv[0], &w);
    FD_SET(p[1], &w);
    FD_SET(sv[1], &e);
    result("select, nothing to read", select(8, &r, &w, &e, &tv));
    show("readable", &r, 8);
    show("writable", &w, 8);
    show("exceptional", &e, 8);

    write(sv[1], "x", 1);
    FD_ZERO(&r);
    FD_SET(sv[0], &r);
    FD_SET(p[0], &r);
    tv.tv_sec = 5;
    result("select, data waiting", select(8, &r, NULL, NULL, &tv));
    show("readable", &r, 8);

    char c;
    read(sv[0], &c, 1);
    FD_ZERO(&r);
    FD_SET(sv[0], &r);
    tv.tv_sec = 0;
    tv.tv_usec = 100000;
    result("select times out", select(8, &r, NULL, NULL, &tv));
    printf("  time left %ld.%06ld\n", (long)tv.tv_sec, (long)tv.tv_usec);
    show("readable", &r, 8);

    /* A child writes after a while: the wait ends with it. */
    pid_t child = fork();
    if (child == 0) {
        usleep(100000);
        write(sv[1], "later", 5);
        _exit(0);
    }
    FD_ZERO(&r);
    FD_SET(sv[0], &r);
    result("select waits for the peer", select(sv[0] + 1, &r, NULL, NULL, NULL));
    show("readable", &r, 8);
    waitpid(child, NULL, 0);

    /* pselect6 with a mask: SIGUSR1 stays blocked during the wait, as asked. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    struct timespec ts = {0, 50000000};
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    result("pselect times out", pselect(8, &r, NULL, NULL, &ts, &mask));
    FD_ZERO(&r);
    FD_SET(sv[0], &r);
    result("pselect ready", pselect(8, &r, NULL, NULL, &ts, &mask));

    close(sv[1]);
    FD_ZERO(&r);
    FD_SET(sv[0], &r);
    read(sv[0], (char[8]){0}, 8);
    result("select after the peer closed", select(8, &r, NULL, NULL, NULL));
    show("readable", &r, 8);

    FD_ZERO(&r);
    FD_SET(sv[1], &r);
    result("select on a closed descriptor", select(8, &r, NULL, NULL, NULL));
    result("select nfds -1", select(-1, NULL, NULL, NULL, NULL));
    tv.tv_sec = 0;
    tv.tv_usec = 2000000;
    result("select usec 2000000", select(0, NULL, NULL, NULL, &tv));
    tv.tv_sec = -1;
    tv.tv_usec = 0;
    result("select negative time", select(0, NULL, NULL, NULL, &tv));
    tv.tv_sec = 0;
    tv.tv_usec = 1000001;
    result("raw select usec 1000001", syscall(SYS_select, 0, NULL, NULL, NULL, &tv));
    printf("  time left %ld.%06ld\n", (long)tv.tv_sec, (long)tv.tv_usec);
    tv.tv_sec = 1;
    tv.tv_usec = -1;
    result("raw select usec -1", syscall(SYS_select, 0, NULL, NULL, NULL, &tv));
    tv.tv_sec = 0;
    tv.tv_usec = -1000000;
    result("raw select usec -1000000", syscall(SYS_select, 0, NULL, NULL, NULL, &tv));
    FD_ZERO(&w);
    FD_SET(sv[0], &w);
    tv.tv_sec = 3;
    tv.tv_usec = 0;
    result("raw select, writable at once", syscall(SYS_select, 8, NULL, &w, NULL, &tv));
    printf("  time left %ld s\n", (long)tv.tv_sec);
    result("select bad set", syscall(SYS_select, 8, (void *)16, NULL, NULL, NULL));
    result("select bad timeout", syscall(SYS_select, 8, NULL, NULL, NULL, (void *)16));
    struct {
        void *ss;
        size_t len;
    } sig = {&mask, 4};
    ts.tv_sec = 0;
    ts.tv_nsec = 0;
    result("pselect6 sigset size 4", syscall(SYS_pselect6, 0, NULL, NULL, NULL, &ts, &sig));
    tv.tv_sec = 0;
    tv.tv_usec = 20000;
    result("select as a sleep", select(0, NULL, NULL, NULL, &tv));
    return 0;
}
