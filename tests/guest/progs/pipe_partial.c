/* A signal cuts a big pipe write short: it answers what it wrote (SA_RESTART or
   not); a write that wrote nothing yet answers EINTR. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/time.h>

static char big[1 << 18];
static int alarms;
static void on_alarm(int sig) { (void)sig; alarms++; }

static void cut_short(const char *what, int fd, size_t n, int flags) {
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = flags};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {0, 50000}};
    setitimer(ITIMER_REAL, &it, NULL);
    errno = 0;
    ssize_t r = write(fd, big, n);
    printf("%-24s %zd %s (alarms %d)\n", what, r, r < 0 ? strerrorname_np(errno) : "", alarms);
}

int main(void) {
    int p[2];
    pipe(p);
    cut_short("partly written", p[1], sizeof big, 0);
    char sink[1 << 16];
    while (read(p[0], sink, sizeof sink) == sizeof sink && alarms < 0) {}
    cut_short("partly, SA_RESTART", p[1], sizeof big, SA_RESTART);
    cut_short("nothing written", p[1], sizeof big, 0);
    return 0;
}
