/* A signal cuts a futex wait short: a timed wait answers EINTR to a handler even
   with SA_RESTART (Linux's -ERESTART_RESTARTBLOCK); with no handler (a stop and
   SIGCONT) it goes on and ends at its first deadline. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>

static int word;
static void on_alarm(int sig) { (void)sig; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void timed_wait(const char *what, long ms) {
    struct timespec ts = {0, ms * 1000000};
    double start = now();
    long r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
    double took = now() - start;
    printf("%-26s %s, %s\n", what, r < 0 ? strerrorname_np(errno) : "woken",
           took < ms / 1e3 ? "early" : took < ms / 1e3 + 0.15 ? "on time" : "late");
    fflush(stdout);
}

int main(void) {
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {0, 30000}};
    setitimer(ITIMER_REAL, &it, NULL);
    double start = now();
    long r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &(struct timespec){0, 300000000}, NULL, 0);
    printf("SA_RESTART handler         %s, %s\n", r < 0 ? strerrorname_np(errno) : "woken",
           now() - start < 0.3 ? "cut short" : "waited on");
    setitimer(ITIMER_REAL, &it, NULL);
    timed_wait("after the handler", 100);  /* the alarm cuts this one short too */

    pid_t pid = fork();
    if (pid == 0) {
        timed_wait("stopped and continued", 300);
        _exit(0);
    }
    usleep(50000);
    kill(pid, SIGSTOP);
    int st;
    waitpid(pid, &st, WUNTRACED);
    usleep(200000);  /* resumed 50 ms before its deadline: a wait begun afresh would be late */
    kill(pid, SIGCONT);
    waitpid(pid, &st, 0);
    printf("child status %d\n", st);
    return 0;
}
