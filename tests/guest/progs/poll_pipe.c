/* poll and ppoll on pipes: ready at once, a timeout, woken by another process, hangup. */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
    int p[2]; pipe(p);
    struct pollfd f[3] = {{p[0], POLLIN, 0}, {p[1], POLLOUT, 0}, {99, POLLIN, 0}};
    int n = poll(f, 3, 0);
    printf("nfds ready %d: %#x %#x %#x\n", n, f[0].revents, f[1].revents, f[2].revents);
    f[1].events = 0;
    n = poll(f, 2, 50);
    printf("timeout: %d %#x\n", n, f[0].revents);
    pid_t pid = fork();
    if (pid == 0) { usleep(50000); write(p[1], "x", 1); _exit(0); }
    n = poll(f, 1, -1);
    printf("woken: %d %#x\n", n, f[0].revents);
    close(p[1]);
    char c; read(p[0], &c, 1);
    wait(NULL);
    n = poll(f, 1, -1);
    printf("hangup: %d %#x\n", n, f[0].revents);
    sigset_t m; sigemptyset(&m);
    struct timespec ts = {0, 20000000};
    n = ppoll(f, 0, &ts, &m);
    printf("ppoll nothing: %d\n", n);
    return 0;
}
